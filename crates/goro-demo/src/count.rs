//! Counting of lines, words and bytes as GNU `LC_ALL=C wc` does (coreutils 9.1).
//!
//! In the C locale `wc` sorts every byte into one of three classes:
//!
//! - whitespace (`isspace`: b' ', b'\t', b'\n', b'\v', b'\f', b'\r') ends a word;
//! - a printable non-space byte (`isprint`: 0x21..=0x7e) starts a word unless one is open;
//! - any other byte (control bytes, NUL, DEL, 0x80..=0xff) neither starts nor ends a word, so
//!   `a\x01b` is one word and `\x01` alone is no word.
//!
//! A line is a b'\n', so a last line without one is not counted.

use std::io::{self, Read};
use std::ops::AddAssign;

/// Size of the buffer that [`count_reader`] reads into: 64 KiB.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Line, word and byte counts of one input or of several added together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Number of b'\n' bytes.
    pub lines: u64,
    /// Number of words, as defined in the module documentation.
    pub words: u64,
    /// Number of bytes.
    pub bytes: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.lines += other.lines;
        self.words += other.words;
        self.bytes += other.bytes;
    }
}

/// Class bits of a byte, which update the in-word state without a branch:
/// `in_word = (in_word & KEEP) | START`. Whitespace clears the state, a printable byte sets it,
/// and any other byte keeps it.
const KEEP: u8 = 0b01;
const START: u8 = 0b10;

/// The class bits of every byte value in the C locale.
static BYTE_CLASS: [u8; 256] = build_byte_class();

const fn build_byte_class() -> [u8; 256] {
    let mut table = [KEEP; 256];
    let mut byte = 0x21;
    while byte <= 0x7e {
        table[byte] = START;
        byte += 1;
    }
    let spaces = [b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r'];
    let mut i = 0;
    while i < spaces.len() {
        table[spaces[i] as usize] = 0;
        i += 1;
    }
    table
}

/// Counts an input fed to it in chunks of any size.
///
/// The in-word state carries over from one chunk to the next, so splitting an input anywhere
/// gives the same counts as feeding it whole.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    counts: Counts,
    in_word: bool,
}

impl Counter {
    /// Creates a counter at the start of an input.
    pub fn new() -> Counter {
        Counter::default()
    }

    /// Counts the next `chunk` of the input.
    pub fn update(&mut self, chunk: &[u8]) {
        let mut lines = 0u64;
        let mut words = 0u64;
        let mut in_word = u8::from(self.in_word);
        for &byte in chunk {
            let class = BYTE_CLASS[usize::from(byte)];
            let start = class >> 1;
            lines += u64::from(byte == b'\n');
            words += u64::from(start & !in_word & 1);
            in_word = (in_word & class & KEEP) | start;
        }
        self.in_word = in_word != 0;
        self.counts.lines += lines;
        self.counts.words += words;
        self.counts.bytes += chunk.len() as u64;
    }

    /// Returns the counts of everything fed so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

/// Counts everything `reader` yields, reading it in chunks of [`CHUNK_SIZE`] bytes.
///
/// A read interrupted by a signal is retried, and any other read error is returned.
pub fn count_reader<R: Read>(mut reader: R) -> io::Result<Counts> {
    // On the heap because a goroutine's stack may be smaller than the buffer.
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut counter = Counter::new();
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(counter.counts()),
            Ok(n) => counter.update(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(input: &[u8]) -> Counts {
        let mut counter = Counter::new();
        counter.update(input);
        counter.counts()
    }

    fn counts(lines: u64, words: u64, bytes: u64) -> Counts {
        Counts {
            lines,
            words,
            bytes,
        }
    }

    /// Counts one byte at a time with the plain rule, as a reference for the table.
    fn count_by_rule(input: &[u8]) -> Counts {
        let mut result = Counts::default();
        let mut in_word = false;
        for &byte in input {
            result.bytes += 1;
            if byte == b'\n' {
                result.lines += 1;
            }
            if matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
                in_word = false;
            } else if (0x21..=0x7e).contains(&byte) {
                if !in_word {
                    result.words += 1;
                }
                in_word = true;
            }
        }
        result
    }

    #[test]
    fn empty_input() {
        assert_eq!(count(b""), Counts::default());
    }

    #[test]
    fn last_line_without_newline() {
        assert_eq!(count(b"one two\nthree"), counts(1, 3, 13));
    }

    #[test]
    fn every_whitespace_ends_word() {
        assert_eq!(count(b"a b\tc\nd\x0be\x0cf\rg"), counts(1, 7, 13));
    }

    #[test]
    fn control_bytes_neither_start_nor_end_word() {
        // The cases checked against `printf ... | LC_ALL=C wc -w` of GNU coreutils 9.1.
        assert_eq!(count(b"a\x01b \x80c\n").words, 2);
        assert_eq!(count(b"\x01 \x01").words, 0);
        assert_eq!(count(b"a\x00b").words, 1);
        assert_eq!(count(b"\x80").words, 0);
        assert_eq!(count(b"\x01a").words, 1);
        assert_eq!(count(b"a\x01 \x01b").words, 2);
        assert_eq!(count(b"\x7f\xff\x00").words, 0);
    }

    #[test]
    fn table_matches_rule_for_every_byte_pair() {
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let input = [b'x', first, second, b'y'];
                assert_eq!(count(&input), count_by_rule(&input), "input {input:x?}");
            }
        }
    }

    #[test]
    fn every_split_of_tricky_buffer() {
        let input = b"  word\x01joined \x80\x00start\n\n\x0b\x0c\r\ttail\xffend\x7f \x01\x02x";
        let whole = count(input);
        assert_eq!(whole, count_by_rule(input));
        for split in 0..=input.len() {
            let mut counter = Counter::new();
            counter.update(&input[..split]);
            counter.update(&input[split..]);
            assert_eq!(counter.counts(), whole, "split at {split}");
        }
    }

    #[test]
    fn reader_carries_word_over_chunk_boundary() {
        // A word across the boundary between the first and second read must count once.
        let mut input = vec![b' '; CHUNK_SIZE - 2];
        input.extend_from_slice(b"abcd\n");
        let result = count_reader(&input[..]).expect("reading a slice cannot fail");
        assert_eq!(result, counts(1, 1, input.len() as u64));
    }

    #[test]
    fn reader_retries_interrupted_read() {
        struct Interrupting {
            interrupted: bool,
            data: &'static [u8],
        }
        impl Read for Interrupting {
            fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
                if !self.interrupted {
                    self.interrupted = true;
                    return Err(io::ErrorKind::Interrupted.into());
                }
                self.data.read(buffer)
            }
        }
        let reader = Interrupting {
            interrupted: false,
            data: b"a b\n",
        };
        assert_eq!(count_reader(reader).unwrap(), counts(1, 2, 4));
    }

    #[test]
    fn reader_returns_read_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(5))
            }
        }
        let err = count_reader(Failing).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(5));
    }

    /// Bytes of which half come from a few of each class, so that words and splits interact.
    fn tricky_byte() -> impl Strategy<Value = u8> {
        const TRICKY: [u8; 10] = [b' ', b'\n', b'\t', 0x0b, 0x01, 0x00, 0x80, 0x7f, b'a', b'~'];
        any::<u16>().prop_map(|random| {
            let [low, high] = random.to_le_bytes();
            if high & 1 == 0 {
                TRICKY[usize::from(low) % TRICKY.len()]
            } else {
                low
            }
        })
    }

    proptest! {
        #[test]
        fn random_splits_match_one_shot(
            input in proptest::collection::vec(tricky_byte(), 0..512),
            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let whole = count(&input);
            prop_assert_eq!(whole, count_by_rule(&input));

            let mut offsets: Vec<usize> = splits.iter().map(|s| s.index(input.len() + 1)).collect();
            offsets.sort_unstable();
            let mut counter = Counter::new();
            let mut start = 0;
            for offset in offsets {
                counter.update(&input[start..offset]);
                start = offset;
            }
            counter.update(&input[start..]);
            prop_assert_eq!(counter.counts(), whole);
        }
    }
}
