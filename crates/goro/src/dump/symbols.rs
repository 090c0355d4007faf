//! Symbol names for program counters: `dladdr` finds the object and, for exported symbols,
//! the name; for the rest (most functions of a Rust executable are not in its dynamic symbol
//! table) the object's ELF `.symtab` is read from its file, once per object.

use std::ffi::CStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What is known of the code at one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Symbol {
    /// The demangled function name.
    pub(crate) function: Option<String>,
    /// The address's offset from the function's start.
    pub(crate) offset: usize,
    /// The path of the executable or shared library.
    pub(crate) object: Option<String>,
}

/// Looks up the function that contains `pc`.
pub(crate) fn resolve(pc: usize) -> Symbol {
    // SAFETY: an all-zero Dl_info is a valid value of the plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    if unsafe { libc::dladdr(pc as *const libc::c_void, &mut info) } == 0 {
        return Symbol::default();
    }
    let object = (!info.dli_fname.is_null())
        .then(|| {
            // SAFETY: dladdr returned a NUL-terminated path owned by the loader.
            let path = unsafe { CStr::from_ptr(info.dli_fname) };
            path.to_string_lossy().into_owned()
        })
        .filter(|name| !name.is_empty());
    let base = info.dli_fbase as usize;
    if let Some(table) = symbol_table(object.as_deref(), base)
        && let Some((start, name)) = table.lookup(pc - base)
    {
        return Symbol {
            function: Some(demangle(name)),
            offset: pc - base - start,
            object,
        };
    }
    if !info.dli_sname.is_null() {
        // SAFETY: as for the path.
        let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy();
        return Symbol {
            function: Some(demangle(&name)),
            offset: pc - info.dli_saddr as usize,
            object,
        };
    }
    Symbol {
        function: None,
        offset: pc - base,
        object,
    }
}

/// Function symbols of one ELF object, sorted by address relative to its load base.
struct SymbolTable {
    /// (start, size, name).
    functions: Vec<(usize, usize, String)>,
}

impl SymbolTable {
    fn lookup(&self, relative: usize) -> Option<(usize, &str)> {
        let index = self
            .functions
            .partition_point(|(start, _, _)| *start <= relative);
        let (start, size, name) = self.functions.get(index.checked_sub(1)?)?;
        (relative < start + size).then_some((*start, name.as_str()))
    }
}

/// Returns the table of the object at `path` loaded at `base`; `None` when the file cannot be
/// read or has no `.symtab` (a stripped binary). Tables stay cached for the process's lifetime,
/// so that repeated dumps do not re-read large files.
fn symbol_table(path: Option<&str>, base: usize) -> Option<Arc<SymbolTable>> {
    static TABLES: Mutex<Vec<(usize, Option<Arc<SymbolTable>>)>> = Mutex::new(Vec::new());
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, table)) = tables.iter().find(|(b, _)| *b == base) {
        return table.clone();
    }
    // The main executable's dladdr path is argv[0], which may be relative or gone.
    let file = match path {
        Some(path) if !is_main_executable(base) => PathBuf::from(path),
        _ => PathBuf::from("/proc/self/exe"),
    };
    let table = read_symbol_table(&file).map(Arc::new);
    tables.push((base, table.clone()));
    table
}

/// Returns whether the object loaded at `base` is the main executable.
fn is_main_executable(base: usize) -> bool {
    // SAFETY: getauxval has no preconditions; AT_PHDR is the address of the executable's
    // program headers, which lie in its first page.
    let phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
    phdr >= base && phdr - base < 1 << 20
}

/// ELF constants used below.
const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;

fn read_symbol_table(path: &Path) -> Option<SymbolTable> {
    let file = File::open(path).ok()?;
    let read = |offset: u64, length: usize| -> Option<Vec<u8>> {
        let mut bytes = vec![0; length];
        file.read_exact_at(&mut bytes, offset).ok()?;
        Some(bytes)
    };
    let header = read(0, 64)?;
    // A 64-bit ELF file in the machine's byte order (EI_CLASS 2).
    if &header[..4] != b"\x7fELF" || header[4] != 2 {
        return None;
    }
    let u16_at = |bytes: &[u8], at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |bytes: &[u8], at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at =
        |bytes: &[u8], at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    let section_offset = u64_at(&header, 0x28);
    let section_size = u16_at(&header, 0x3a) as usize;
    let section_count = u16_at(&header, 0x3c) as usize;
    if section_size < 64 {
        return None;
    }
    let sections = read(section_offset, section_size * section_count)?;
    let section = |index: usize| &sections[index * section_size..(index + 1) * section_size];
    let symtab = (0..section_count).find(|&i| u32_at(section(i), 4) == SHT_SYMTAB)?;
    let symtab = section(symtab);
    let strtab = section(u32_at(symtab, 0x28) as usize);
    let symbols = read(u64_at(symtab, 0x18), u64_at(symtab, 0x20) as usize)?;
    let strings = read(u64_at(strtab, 0x18), u64_at(strtab, 0x20) as usize)?;

    let mut functions: Vec<(usize, usize, String)> = symbols
        .chunks_exact(24)
        .filter(|symbol| symbol[4] & 0x0f == STT_FUNC)
        .filter_map(|symbol| {
            let value = u64_at(symbol, 8) as usize;
            let size = u64_at(symbol, 16) as usize;
            let name_at = u32_at(symbol, 0) as usize;
            let name = strings.get(name_at..)?;
            let name = CStr::from_bytes_until_nul(name).ok()?.to_str().ok()?;
            (value != 0 && size != 0).then(|| (value, size, name.to_string()))
        })
        .collect();
    functions.sort_by_key(|(start, _, _)| *start);
    Some(SymbolTable { functions })
}

/// Demangles a Rust symbol in the legacy scheme (`_ZN...E`, rustc's default), dropping the
/// trailing hash; returns other names unchanged.
pub(crate) fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else {
        return name.to_string();
    };
    let mut parts = Vec::new();
    while !rest.starts_with('E') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(length) = rest[..digits].parse::<usize>() else {
            return name.to_string();
        };
        let Some(part) = rest.get(digits..digits + length) else {
            return name.to_string();
        };
        parts.push(part);
        rest = &rest[digits + length..];
    }
    if let Some(last) = parts.last()
        && last.len() == 17
        && last.starts_with('h')
        && last[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        parts.pop();
    }
    parts
        .iter()
        .map(|part| unescape(part))
        .collect::<Vec<_>>()
        .join("::")
}

/// Decodes the `$..$` escapes and `..` separators of one legacy-mangled path component.
fn unescape(part: &str) -> String {
    // A leading `_` protects a component that starts with an escape.
    let part = if part.starts_with("_$") {
        &part[1..]
    } else {
        part
    };
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(c) = rest.chars().next() {
        if c == '$' {
            if let Some(end) = rest[1..].find('$') {
                let code = &rest[1..end + 1];
                let decoded = match code {
                    "SP" => Some('@'),
                    "BP" => Some('*'),
                    "RF" => Some('&'),
                    "LT" => Some('<'),
                    "GT" => Some('>'),
                    "LP" => Some('('),
                    "RP" => Some(')'),
                    "C" => Some(','),
                    _ => code
                        .strip_prefix('u')
                        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                        .and_then(char::from_u32),
                };
                if let Some(decoded) = decoded {
                    out.push(decoded);
                    rest = &rest[end + 2..];
                    continue;
                }
            }
        } else if rest.starts_with("..") {
            out.push_str("::");
            rest = &rest[2..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangle_legacy_paths() {
        assert_eq!(
            demangle("_ZN4goro4park4park17h0123456789abcdefE"),
            "goro::park::park"
        );
        assert_eq!(
            demangle(
                "_ZN60_$LT$alloc..vec..Vec$LT$T$GT$$u20$as$u20$core..ops..Drop$GT$4drop17h1111111111111111E"
            ),
            "<alloc::vec::Vec<T> as core::ops::Drop>::drop"
        );
        assert_eq!(demangle("main"), "main");
    }

    #[test]
    fn resolve_names_own_function() {
        let symbol = resolve(resolve_names_own_function as *const () as usize + 1);
        let function = symbol.function.expect("the test binary has a .symtab");
        assert!(
            function.ends_with("resolve_names_own_function"),
            "{function}"
        );
        assert_eq!(symbol.offset, 1);
    }
}
