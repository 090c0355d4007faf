//! Tidy checks over every `.rs` file in `crates/` and `xtask/`, run by plain `cargo test`.
//!
//! The rules:
//! - every file (crate root or module) starts with `//!` docs, after inner attributes at most;
//! - every `unsafe { ... }` block has a `// SAFETY:` comment on its own line or in the comment
//!   block just above it, with only attributes and blank lines in between;
//! - every `pub` `unsafe fn` and `unsafe trait` has a `# Safety` section in its docs, also
//!   with `pub(crate)` and other restricted visibilities. `unsafe extern "ABI" fn`, the form
//!   that naked functions take, counts as an unsafe fn;
//! - no `#[ignore]` without a reason (`#[ignore = "..."]`), also inside `cfg_attr`;
//! - no `todo!` or `unimplemented!` outside tests: `tests/` directories, `#[cfg(test)]` modules
//!   (inline or in their own file) and `#[test]` functions.
//!
//! Comments, string literals and character literals are blanked before the code is searched,
//! so text inside them never counts as code. Each violation is reported as `path:line: rule`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One broken rule.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    line: usize,
    message: &'static str,
}

const MISSING_MODULE_DOCS: &str = "file does not start with `//!` docs";
const MISSING_SAFETY_COMMENT: &str =
    "`unsafe` block without a `// SAFETY:` comment on its line or just above";
const MISSING_SAFETY_SECTION: &str = "pub `unsafe fn` or `unsafe trait` without `# Safety` docs";
const IGNORE_WITHOUT_REASON: &str = "`ignore` without a reason; write `#[ignore = \"why\"]`";
const TODO_OUTSIDE_TESTS: &str = "`todo!` or `unimplemented!` outside tests";

// ---------------------------------------------------------------------------------------------
// Lexing: separating code from comments and literals.
// ---------------------------------------------------------------------------------------------

/// A source file with its comments and literals separated from its code.
struct Lexed {
    /// The text with every comment character and every character inside a string or character
    /// literal replaced by a space. Quotes and newlines stay, so indices and lines match the
    /// original.
    code: Vec<char>,
    /// The comments on each line (0-based), one entry per comment or per line of a block
    /// comment, starting at its `//` or `/*` where it has one.
    comments: Vec<Vec<String>>,
    /// The index in `code` at which each line starts.
    line_starts: Vec<usize>,
}

impl Lexed {
    fn line_of(&self, index: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= index) - 1
    }

    fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// Returns the code of a line (0-based), without its newline.
    fn code_line(&self, line: usize) -> String {
        let start = self.line_starts[line];
        let end = self
            .line_starts
            .get(line + 1)
            .map_or(self.code.len(), |&next| next - 1);
        self.code[start..end].iter().collect()
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Lexed {
    let chars: Vec<char> = text.chars().collect();
    let mut code = chars.clone();
    let mut line_starts = vec![0];
    for (index, &c) in chars.iter().enumerate() {
        if c == '\n' {
            line_starts.push(index + 1);
        }
    }
    let mut comments = vec![Vec::new(); line_starts.len()];
    let mut line = 0;
    let mut i = 0;
    let at = |index: usize| chars.get(index).copied();

    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && at(i + 1) == Some('/') {
            let start = i;
            while i < chars.len() && chars[i] != '\n' {
                code[i] = ' ';
                i += 1;
            }
            comments[line].push(chars[start..i].iter().collect());
        } else if c == '/' && at(i + 1) == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            let mut segment = String::new();
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == Some('*') {
                    depth += 1;
                } else if chars[i] == '*' && at(i + 1) == Some('/') {
                    depth -= 1;
                } else if chars[i] == '\n' {
                    comments[line].push(std::mem::take(&mut segment));
                    line += 1;
                    i += 1;
                    continue;
                } else {
                    segment.push(chars[i]);
                    code[i] = ' ';
                    i += 1;
                    continue;
                }
                segment.extend(&chars[i..i + 2]);
                code[i] = ' ';
                code[i + 1] = ' ';
                i += 2;
                if depth == 0 {
                    break;
                }
            }
            if !segment.trim().is_empty() {
                comments[line].push(segment);
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    code[i] = ' ';
                    i += 1;
                }
                if i < chars.len() {
                    if chars[i] == '\n' {
                        line += 1;
                    } else {
                        code[i] = ' ';
                    }
                }
                i += 1;
            }
            i += 1;
        } else if let Some(hashes) = raw_string_hashes(&chars, i) {
            // r"..." or r#"..."#, possibly after a b or c prefix.
            i += 1 + hashes + 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == Some('#')) {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                } else {
                    code[i] = ' ';
                }
                i += 1;
            }
        } else if c == '\'' && at(i + 1) == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{1F600}'.
            let mut end = i + 3;
            while end < chars.len() && chars[end] != '\'' && chars[end] != '\n' {
                end += 1;
            }
            for blank in &mut code[i + 1..end.min(chars.len())] {
                *blank = ' ';
            }
            i = end + 1;
        } else if c == '\'' && at(i + 2) == Some('\'') && at(i + 1) != Some('\n') {
            // A one-character literal; anything else after a quote is a lifetime or label.
            code[i + 1] = ' ';
            i += 3;
        } else {
            i += 1;
        }
    }
    Lexed {
        code,
        comments,
        line_starts,
    }
}

/// If a raw string literal starts at `index` (its `r`), returns its number of `#`s.
fn raw_string_hashes(chars: &[char], index: usize) -> Option<usize> {
    if chars[index] != 'r' {
        return None;
    }
    let starts_token = |at: usize| at == 0 || !is_ident_char(chars[at - 1]);
    let prefixed = index >= 1 && matches!(chars[index - 1], 'b' | 'c') && starts_token(index - 1);
    if !starts_token(index) && !prefixed {
        return None;
    }
    let mut end = index + 1;
    while chars.get(end) == Some(&'#') {
        end += 1;
    }
    (chars.get(end) == Some(&'"')).then_some(end - index - 1)
}

// ---------------------------------------------------------------------------------------------
// Structure: attributes, words and brace-delimited regions in the blanked code.
// ---------------------------------------------------------------------------------------------

/// An attribute `#[...]` or `#![...]`: the index of its `#`, the index after its `]`, and its
/// content between the brackets with all whitespace removed.
struct Attribute {
    start: usize,
    end: usize,
    /// Whether it is an inner attribute, `#![...]`, which applies to the enclosing module.
    inner: bool,
    content: String,
}

fn attributes(code: &[char]) -> Vec<Attribute> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i] != '#' {
            i += 1;
            continue;
        }
        let mut open = i + 1;
        if code.get(open) == Some(&'!') {
            open += 1;
        }
        if code.get(open) != Some(&'[') {
            i += 1;
            continue;
        }
        let Some(close) = matching_close(code, open) else {
            break;
        };
        let content = code[open + 1..close]
            .iter()
            .filter(|c| !c.is_whitespace())
            .collect();
        let inner = open == i + 2;
        found.push(Attribute {
            start: i,
            end: close + 1,
            inner,
            content,
        });
        i = close + 1;
    }
    found
}

/// Returns the index of the bracket that closes the one at `open` (`(`, `[` or `{`), counting
/// all three kinds.
fn matching_close(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, &c) in code.iter().enumerate().skip(open) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// Returns the indices at which the whole word `word` occurs.
fn word_indices(code: &[char], word: &str) -> Vec<usize> {
    let word: Vec<char> = word.chars().collect();
    let mut found = Vec::new();
    for start in 0..code.len().saturating_sub(word.len() - 1) {
        let end = start + word.len();
        if code[start..end] == word[..]
            && (start == 0 || !is_ident_char(code[start - 1]))
            && code.get(end).is_none_or(|&c| !is_ident_char(c))
        {
            found.push(start);
        }
    }
    found
}

fn skip_whitespace(code: &[char], mut index: usize) -> usize {
    while code.get(index).is_some_and(|c| c.is_whitespace()) {
        index += 1;
    }
    index
}

/// Returns the identifier starting at `index`, or an empty string.
fn word_at(code: &[char], index: usize) -> String {
    code[index.min(code.len())..]
        .iter()
        .take_while(|&&c| is_ident_char(c))
        .collect()
}

/// Lines (0-based) that hold only attributes, including the continuation lines of a
/// multi-line attribute, and macro repetitions of attributes such as `$(#[$meta])*`.
fn attribute_lines(lexed: &Lexed, attributes: &[Attribute]) -> Vec<bool> {
    let mut inside = vec![false; lexed.code.len()];
    for attribute in attributes {
        for flag in &mut inside[attribute.start..attribute.end] {
            *flag = true;
        }
    }
    (0..lexed.line_count())
        .map(|line| {
            let start = lexed.line_starts[line];
            let text = lexed.code_line(line);
            let trimmed = text.trim_start();
            if trimmed.starts_with("$(#[") {
                return true;
            }
            let mut any = false;
            for (offset, c) in text.chars().enumerate() {
                if !c.is_whitespace() {
                    if !inside[start + offset] {
                        return false;
                    }
                    any = true;
                }
            }
            any
        })
        .collect()
}

/// Returns whether a `cfg` attribute's content (whitespace removed) compiles its item only in tests:
/// `cfg(test)` or `cfg(all(..., test, ...))`.
fn is_test_cfg(content: &str) -> bool {
    if content == "cfg(test)" {
        return true;
    }
    content
        .strip_prefix("cfg(all(")
        .and_then(|rest| rest.strip_suffix("))"))
        .is_some_and(|arguments| top_level_split(arguments).contains(&"test"))
}

/// Splits at the commas that are not nested in parentheses.
fn top_level_split(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// What a test attribute (`#[test]`, `#[cfg(test)]`) applies to.
enum TestItem {
    /// The item's body, from `{` to `}`, as code indices.
    Region(usize, usize),
    /// `mod name;`: a test module in its own file.
    ModuleFile(String),
}

/// Finds the items that only tests compile.
fn test_items(code: &[char], attributes: &[Attribute]) -> Vec<TestItem> {
    let mut items = Vec::new();
    for (position, attribute) in attributes.iter().enumerate() {
        if attribute.content != "test" && !is_test_cfg(&attribute.content) {
            continue;
        }
        if attribute.inner {
            // `#![cfg(test)]` makes the whole file test-only.
            items.push(TestItem::Region(0, code.len()));
            continue;
        }
        // Skip the attributes that follow, then find the item's body or closing semicolon.
        let mut index = attribute.end;
        for next in &attributes[position + 1..] {
            if skip_whitespace(code, index) == next.start {
                index = next.end;
            }
        }
        let item_start = skip_whitespace(code, index);
        let mut depth = 0usize;
        let mut cursor = item_start;
        while cursor < code.len() {
            match code[cursor] {
                '(' | '[' => depth += 1,
                ')' | ']' => depth = depth.saturating_sub(1),
                '{' if depth == 0 => {
                    if let Some(close) = matching_close(code, cursor) {
                        items.push(TestItem::Region(cursor, close));
                    }
                    break;
                }
                ';' if depth == 0 => {
                    let item: String = code[item_start..cursor].iter().collect();
                    let words: Vec<&str> = item.split_whitespace().collect();
                    if let [.., "mod", name] = words[..] {
                        items.push(TestItem::ModuleFile(name.to_string()));
                    }
                    break;
                }
                _ => {}
            }
            cursor += 1;
        }
    }
    items
}

// ---------------------------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------------------------

/// Checks one file. `is_test_file` is true for files that only tests compile: files under a
/// crate's `tests/` and `#[cfg(test)]` module files.
fn check_source(text: &str, is_test_file: bool) -> Vec<Violation> {
    let lexed = lex(text);
    let attributes = attributes(&lexed.code);
    let attribute_lines = attribute_lines(&lexed, &attributes);
    let mut violations = Vec::new();
    check_module_docs(text, &lexed, &attributes, &mut violations);
    check_unsafe_blocks(&lexed, &attribute_lines, &mut violations);
    check_unsafe_items(&lexed, &attribute_lines, text, &mut violations);
    check_ignore_reasons(&lexed, &attributes, &mut violations);
    if !is_test_file {
        check_todo(&lexed, &attributes, &mut violations);
    }
    violations.sort_by_key(|violation| violation.line);
    violations
}

/// Rule: the file starts with `//!` (or `/*!`) docs. Blank lines, plain comments and inner
/// attributes such as `#![cfg(loom)]` may come first.
fn check_module_docs(
    text: &str,
    lexed: &Lexed,
    attributes: &[Attribute],
    violations: &mut Vec<Violation>,
) {
    let mut line = 0;
    let lines: Vec<&str> = text.lines().collect();
    while line < lines.len() {
        let trimmed = lines[line].trim_start();
        if trimmed.starts_with("//!") || trimmed.starts_with("/*!") {
            return;
        }
        if trimmed.starts_with("#![") {
            let start = lexed.line_starts[line] + (lines[line].len() - trimmed.len());
            let Some(attribute) = attributes.iter().find(|attribute| attribute.start >= start)
            else {
                break;
            };
            line = lexed.line_of(attribute.end.saturating_sub(1)) + 1;
            continue;
        }
        if trimmed.is_empty() || (trimmed.starts_with("//") && !trimmed.starts_with("///")) {
            line += 1;
            continue;
        }
        break;
    }
    violations.push(Violation {
        line: 1,
        message: MISSING_MODULE_DOCS,
    });
}

/// Returns whether a comment segment, stripped of its markers, starts with `marker`.
fn comment_starts_with(segment: &str, marker: &str) -> bool {
    segment
        .trim_start()
        .trim_start_matches(['/', '*', '!'])
        .trim_start()
        .starts_with(marker)
}

/// Returns the comments of the lines just above `line` (0-based), walking up across blank lines,
/// attribute lines and comment lines until the first line of other code. Also returns the
/// code of the attribute lines passed.
fn comments_above(
    lexed: &Lexed,
    attribute_lines: &[bool],
    line: usize,
) -> (Vec<String>, Vec<String>) {
    let mut comments = Vec::new();
    let mut attributes = Vec::new();
    for above in (0..line).rev() {
        let code = lexed.code_line(above);
        if attribute_lines[above] {
            attributes.push(code);
        } else if code.trim().is_empty() {
            comments.extend(lexed.comments[above].iter().cloned());
        } else {
            break;
        }
    }
    (comments, attributes)
}

/// Rule: every `unsafe {` has a `SAFETY:` comment on its line or just above.
fn check_unsafe_blocks(lexed: &Lexed, attribute_lines: &[bool], violations: &mut Vec<Violation>) {
    for index in word_indices(&lexed.code, "unsafe") {
        let after = skip_whitespace(&lexed.code, index + "unsafe".len());
        if lexed.code.get(after) != Some(&'{') {
            continue;
        }
        let line = lexed.line_of(index);
        let mut documented = lexed.comments[line]
            .iter()
            .any(|segment| segment.contains("SAFETY:"));
        // rustfmt may move the block to a continuation line of its statement
        // (`let written =` / `    unsafe { ... };`): then the comment above the statement's
        // first line counts too.
        let mut first = line;
        loop {
            let (above, _) = comments_above(lexed, attribute_lines, first);
            documented |= above
                .iter()
                .any(|segment| comment_starts_with(segment, "SAFETY:"));
            if documented || first == 0 {
                break;
            }
            let previous = lexed.code_line(first - 1);
            if !continues_onto_next_line(&previous, &lexed.code_line(first)) {
                break;
            }
            first -= 1;
        }
        if !documented {
            violations.push(Violation {
                line: line + 1,
                message: MISSING_SAFETY_COMMENT,
            });
        }
    }
}

/// Whether the statement on `previous` goes on in `current`: `previous` ends with an
/// assignment, an open bracket or a binary operator, or `current` continues a method chain.
/// A line ending in `,`, `;`, `{` or `}` ends an element, so the walk stops there: a match arm
/// or argument needs its own comment.
fn continues_onto_next_line(previous: &str, current: &str) -> bool {
    let previous = previous.trim_end();
    let current = current.trim_start();
    let open_ending = ["=", "(", "[", "=>", "&&", "||", "+", "-", "|"]
        .iter()
        .any(|ending| previous.ends_with(ending));
    !previous.trim().is_empty() && (open_ending || current.starts_with('.'))
}

/// Returns the kind of item (`fn` or `trait`) that an `unsafe` keyword declares, if it
/// declares one that needs `# Safety` docs.
fn unsafe_item_kind(code: &[char], unsafe_index: usize) -> Option<&'static str> {
    let mut index = skip_whitespace(code, unsafe_index + "unsafe".len());
    let mut keyword = word_at(code, index);
    if keyword == "extern" {
        index = skip_whitespace(code, index + keyword.len());
        if code.get(index) == Some(&'"') {
            let close = code[index + 1..].iter().position(|&c| c == '"')?;
            index = skip_whitespace(code, index + 1 + close + 1);
        }
        keyword = word_at(code, index);
        if keyword != "fn" {
            return None; // An `unsafe extern` block.
        }
    }
    let name_start = skip_whitespace(code, index + keyword.len());
    let named = code
        .get(name_start)
        .is_some_and(|&c| is_ident_char(c) || c == '$');
    match keyword.as_str() {
        // Without a name, `unsafe fn(...)` is a function pointer type.
        "fn" if named => Some("fn"),
        "trait" if named => Some("trait"),
        _ => None,
    }
}

/// Parses the qualifiers before `unsafe` on an item's line. Returns `Some(is_pub)` when they
/// are only a visibility and `const`/`async`/`default`, and `None` when other code precedes
/// `unsafe` (a field's or alias's type, for one).
fn item_visibility(prefix: &str) -> Option<bool> {
    let mut rest = prefix.trim();
    let mut is_pub = false;
    if let Some(after) = rest.strip_prefix("pub") {
        if let Some(restricted) = after.trim_start().strip_prefix('(') {
            rest = restricted.split_once(')')?.1;
            is_pub = true;
        } else if after.is_empty() || after.starts_with(char::is_whitespace) {
            rest = after;
            is_pub = true;
        }
    }
    rest.split_whitespace()
        .all(|word| matches!(word, "const" | "async" | "default"))
        .then_some(is_pub)
}

/// Rule: every pub `unsafe fn` and `unsafe trait` has `# Safety` in its docs.
fn check_unsafe_items(
    lexed: &Lexed,
    attribute_lines: &[bool],
    text: &str,
    violations: &mut Vec<Violation>,
) {
    let raw_lines: Vec<&str> = text.lines().collect();
    for index in word_indices(&lexed.code, "unsafe") {
        if unsafe_item_kind(&lexed.code, index).is_none() {
            continue;
        }
        let line = lexed.line_of(index);
        let prefix: String = lexed.code[lexed.line_starts[line]..index].iter().collect();
        if item_visibility(&prefix) != Some(true) {
            continue;
        }
        let (comments, attributes) = comments_above(lexed, attribute_lines, line);
        if attributes.iter().any(|attribute| attribute.contains('$')) {
            continue; // In a macro, the docs may arrive through `$(#[$meta])*`.
        }
        let in_comments = comments
            .iter()
            .any(|segment| comment_starts_with(segment, "# Safety"));
        // `#[doc = "..."]` attributes: their text is blanked in the code, so read the raw lines.
        let in_doc_attributes = (0..line)
            .rev()
            .take_while(|&above| attribute_lines[above] || lexed.code_line(above).trim().is_empty())
            .any(|above| {
                raw_lines
                    .get(above)
                    .is_some_and(|raw| raw.contains("# Safety"))
            });
        if !in_comments && !in_doc_attributes {
            violations.push(Violation {
                line: line + 1,
                message: MISSING_SAFETY_SECTION,
            });
        }
    }
}

/// Rule: `ignore` attributes give a reason.
fn check_ignore_reasons(lexed: &Lexed, attributes: &[Attribute], violations: &mut Vec<Violation>) {
    for attribute in attributes {
        let content = &attribute.content;
        let bare = content == "ignore"
            || content
                .strip_prefix("cfg_attr(")
                .and_then(|rest| rest.strip_suffix(')'))
                .is_some_and(|arguments| {
                    top_level_split(arguments)
                        .iter()
                        .skip(1)
                        .any(|part| *part == "ignore")
                });
        if bare {
            violations.push(Violation {
                line: lexed.line_of(attribute.start) + 1,
                message: IGNORE_WITHOUT_REASON,
            });
        }
    }
}

/// Rule: no `todo!` or `unimplemented!` outside test items.
fn check_todo(lexed: &Lexed, attributes: &[Attribute], violations: &mut Vec<Violation>) {
    let regions: Vec<(usize, usize)> = test_items(&lexed.code, attributes)
        .into_iter()
        .filter_map(|item| match item {
            TestItem::Region(start, end) => Some((start, end)),
            TestItem::ModuleFile(_) => None,
        })
        .collect();
    for word in ["todo", "unimplemented"] {
        for index in word_indices(&lexed.code, word) {
            let after = skip_whitespace(&lexed.code, index + word.len());
            if lexed.code.get(after) != Some(&'!') {
                continue;
            }
            if regions
                .iter()
                .any(|&(start, end)| start < index && index < end)
            {
                continue;
            }
            violations.push(Violation {
                line: lexed.line_of(index) + 1,
                message: TODO_OUTSIDE_TESTS,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workspace walk.
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Collects the `.rs` files below `dir`, skipping `target` and hidden directories.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// Returns the directory in which `mod name;` looks for `name.rs` and `name/mod.rs`: the file's own
/// directory for `lib.rs`, `main.rs`, `mod.rs` and other crate roots, else the directory
/// named after the file.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap();
    let stem = file.file_stem().unwrap().to_string_lossy();
    let is_crate_root = parent
        .file_name()
        .is_some_and(|dir| dir == "tests" || dir == "benches" || dir == "examples" || dir == "bin")
        || file.file_name().is_some_and(|name| name == "build.rs");
    if matches!(stem.as_ref(), "lib" | "main" | "mod") || is_crate_root {
        parent.to_path_buf()
    } else {
        parent.join(stem.as_ref())
    }
}

/// Returns whether `file` is under the `tests/` directory of its crate (the nearest directory above it
/// with a Cargo.toml).
fn in_crate_tests_dir(file: &Path) -> bool {
    let Some(crate_dir) = file
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
    else {
        return false;
    };
    file.strip_prefix(crate_dir)
        .is_ok_and(|relative| relative.starts_with("tests"))
}

/// Checks every file and returns `path:line: message` for each violation.
fn check_workspace(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("xtask"), &mut files);
    files.sort();
    assert!(
        files
            .iter()
            .any(|file| file.ends_with("xtask/tests/tidy.rs")),
        "the walk from {} missed this very file",
        root.display()
    );

    // `#[cfg(test)] mod name;` declarations make name.rs, name/mod.rs and everything under
    // name/ test-only.
    let mut test_paths = BTreeSet::new();
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
            (file, text)
        })
        .collect();
    for (file, text) in &texts {
        let lexed = lex(text);
        for item in test_items(&lexed.code, &attributes(&lexed.code)) {
            if let TestItem::ModuleFile(name) = item {
                let dir = module_dir(file);
                test_paths.insert(dir.join(format!("{name}.rs")));
                test_paths.insert(dir.join(name));
            }
        }
    }

    let mut report = Vec::new();
    for (file, text) in &texts {
        let is_test_file =
            in_crate_tests_dir(file) || test_paths.iter().any(|path| file.starts_with(path));
        for violation in check_source(text, is_test_file) {
            let relative = file.strip_prefix(root).unwrap_or(file);
            report.push(format!(
                "{}:{}: {}",
                relative.display(),
                violation.line,
                violation.message
            ));
        }
    }
    report
}

#[test]
fn workspace_is_tidy() {
    let report = check_workspace(&workspace_root());
    assert!(
        report.is_empty(),
        "{} tidy violations:\n{}",
        report.len(),
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests of the rules themselves, on small sources.
// ---------------------------------------------------------------------------------------------

/// Checks `body` as a non-test file with module docs, returning the violated lines.
fn violations_in(body: &str) -> Vec<(usize, &'static str)> {
    let text = format!("//! Docs.\n{body}");
    check_source(&text, false)
        .into_iter()
        .map(|violation| (violation.line - 1, violation.message))
        .collect()
}

#[test]
fn module_docs_required() {
    assert_eq!(
        check_source("use std::fmt;\n", false),
        [Violation {
            line: 1,
            message: MISSING_MODULE_DOCS
        }]
    );
    assert_eq!(
        check_source("/// Item docs are not module docs.\nfn f() {}\n", false),
        [Violation {
            line: 1,
            message: MISSING_MODULE_DOCS
        }]
    );
    assert_eq!(
        check_source("", false),
        [Violation {
            line: 1,
            message: MISSING_MODULE_DOCS
        }]
    );
}

#[test]
fn module_docs_after_inner_attributes() {
    assert!(check_source("//! Docs.\nfn f() {}\n", false).is_empty());
    assert!(check_source("\n// Licence line.\n//! Docs.\n", false).is_empty());
    assert!(check_source("#![cfg(loom)]\n//! Loom models.\n", false).is_empty());
    assert!(
        check_source(
            "#![cfg_attr(\n    loom,\n    allow(dead_code)\n)]\n\n//! Docs.\n",
            false
        )
        .is_empty()
    );
    assert!(check_source("/*! Block docs. */\n", false).is_empty());
}

#[test]
fn unsafe_block_without_safety_comment() {
    assert_eq!(
        violations_in("fn f() {\n    unsafe { g() }\n}\n"),
        [(2, MISSING_SAFETY_COMMENT)]
    );
    // A comment that is not a SAFETY comment does not count.
    assert_eq!(
        violations_in("fn f() {\n    // Calls g.\n    unsafe { g() }\n}\n"),
        [(3, MISSING_SAFETY_COMMENT)]
    );
    // A SAFETY comment above another statement does not cover the next block.
    let body =
        "fn f() {\n    // SAFETY: g has no preconditions.\n    let a = 1;\n    unsafe { g() }\n}\n";
    assert_eq!(violations_in(body), [(4, MISSING_SAFETY_COMMENT)]);
    // Each block needs its own comment.
    let body = "// SAFETY: g has no preconditions.\nconst A: u8 = unsafe { g() };\nconst B: u8 = unsafe { g() };\n";
    assert_eq!(violations_in(body), [(3, MISSING_SAFETY_COMMENT)]);
    // A comment above a match arm does not cover the next arm.
    let body = "fn f(x: u8) {\n    match x {\n        // SAFETY: g has no preconditions.\n        0 => unsafe { g() },\n        _ => unsafe { g() },\n    }\n}\n";
    assert_eq!(violations_in(body), [(5, MISSING_SAFETY_COMMENT)]);
    assert_eq!(
        violations_in("fn f() -> u8 {\n    unsafe\n    {\n        g()\n    }\n}\n"),
        [(2, MISSING_SAFETY_COMMENT)]
    );
}

#[test]
fn unsafe_block_with_safety_comment() {
    let cases = [
        "fn f() {\n    // SAFETY: g has no preconditions.\n    unsafe { g() }\n}\n",
        "fn f() {\n    let x = unsafe { g() }; // SAFETY: g has no preconditions.\n}\n",
        "fn f() {\n    // SAFETY: g has no preconditions,\n    // and the result is unused.\n    #[allow(unused)]\n\n    unsafe { g() }\n}\n",
        "fn f() {\n    /* SAFETY: g has no preconditions. */\n    unsafe { g() }\n}\n",
        "fn f() {\n    h(\n        // SAFETY: g has no preconditions.\n        unsafe { g() },\n    );\n}\n",
        "fn f() {\n    // SAFETY: g has no preconditions.\n    let long_name =\n        unsafe { g() };\n}\n",
        "fn f() {\n    // SAFETY: p is valid.\n    let x = items\n        .iter()\n        .map(|p| unsafe { p.read() });\n}\n",
    ];
    for body in cases {
        assert_eq!(violations_in(body), [], "{body}");
    }
}

#[test]
fn unsafe_text_outside_code_ignored() {
    let cases = [
        "// Never write unsafe { g() } here.\n",
        "/// ```\n/// unsafe { g() }\n/// ```\nfn f() {}\n",
        "/* unsafe {\n   still a comment */\n",
        "const S: &str = \"unsafe { g() }\";\n",
        "const S: &str = r#\"\"unsafe { g() }\"#;\n",
        "const C: char = '\"'; const S: &str = \"unsafe {\";\n",
        "const C: char = '\\''; fn f<'a>(x: &'a u8) {}\n",
        "#[unsafe(no_mangle)]\npub extern \"C\" fn f() {}\n",
        "unsafe extern \"C\" {\n    fn g();\n}\n",
        "// SAFETY: Send is sound because the pointer is never shared.\nunsafe impl Send for X {}\n",
    ];
    for body in cases {
        assert_eq!(violations_in(body), [], "{body}");
    }
}

#[test]
fn pub_unsafe_fn_without_safety_section() {
    let cases = [
        "/// Switches stacks.\npub unsafe fn switch() {}\n",
        "pub(crate) unsafe fn switch() {}\n",
        "/// Switches.\n#[inline(never)]\npub const unsafe fn switch() {}\n",
        "/// A stack.\npub unsafe trait Stack {}\n",
        "/// Switches.\n#[unsafe(naked)]\npub unsafe extern \"C\" fn switch() {\n    core::arch::naked_asm!(\"ret\")\n}\n",
        "impl X {\n    /// Reads.\n    pub unsafe fn read(&self) {}\n}\n",
    ];
    for body in cases {
        let line = body
            .lines()
            .position(|line| line.contains("unsafe "))
            .unwrap()
            + 1;
        assert_eq!(
            violations_in(body),
            [(line, MISSING_SAFETY_SECTION)],
            "{body}"
        );
    }
}

#[test]
fn unsafe_fn_with_safety_section_or_private() {
    let cases = [
        "/// Switches.\n///\n/// # Safety\n///\n/// `to` must be a suspended context.\npub unsafe fn switch() {}\n",
        "/// # Safety\n/// Call on g0.\n#[inline]\n#[cfg(target_arch = \"x86_64\")]\npub(crate) unsafe extern \"C\" fn switch() {}\n",
        "unsafe fn private() {}\n",
        "trait T {\n    unsafe fn in_trait(&self);\n}\n",
        "/// Entry.\npub struct S {\n    /// Called on a new stack.\n    pub entry: unsafe extern \"C\" fn(*mut u8),\n}\n",
        "/// Entry point type.\npub type Entry = unsafe fn(*mut u8);\n",
        "macro_rules! m {\n    ($(#[$meta:meta])* $name:ident) => {\n        $(#[$meta])*\n        pub unsafe fn $name() {}\n    };\n}\n",
        "#[doc = \"# Safety\"]\npub unsafe fn documented_by_attribute() {}\n",
    ];
    for body in cases {
        assert_eq!(violations_in(body), [], "{body}");
    }
}

#[test]
fn ignore_needs_reason() {
    assert_eq!(
        violations_in("#[test]\n#[ignore]\nfn slow() {}\n"),
        [(2, IGNORE_WITHOUT_REASON)]
    );
    assert_eq!(
        violations_in("#[test]\n#[cfg_attr(miri, ignore)]\nfn slow() {}\n"),
        [(2, IGNORE_WITHOUT_REASON)]
    );
    assert_eq!(
        violations_in("#[test]\n#[ignore = \"runs for minutes under QEMU\"]\nfn slow() {}\n"),
        []
    );
    assert_eq!(
        violations_in(
            "#[test]\n#[cfg_attr(miri, ignore = \"no mmap under miri\")]\nfn slow() {}\n"
        ),
        []
    );
    assert_eq!(
        violations_in("// #[ignore]\nconst S: &str = \"#[ignore]\";\n"),
        []
    );
}

#[test]
fn todo_outside_tests() {
    assert_eq!(
        violations_in("fn f() {\n    todo!()\n}\n"),
        [(2, TODO_OUTSIDE_TESTS)]
    );
    assert_eq!(
        violations_in("fn f() {\n    unimplemented!(\"later\")\n}\n"),
        [(2, TODO_OUTSIDE_TESTS)]
    );
    // After a test module closes, the rule applies again.
    let body = "#[cfg(test)]\nmod tests {\n    fn a() { todo!() }\n}\nfn b() { todo!() }\n";
    assert_eq!(violations_in(body), [(5, TODO_OUTSIDE_TESTS)]);
    // cfg(not(test)) is the opposite of a test module.
    assert_eq!(
        violations_in("#[cfg(not(test))]\nfn f() { todo!() }\n"),
        [(2, TODO_OUTSIDE_TESTS)]
    );
    assert_eq!(
        check_source(
            "#![cfg(test)]\n//! Test helpers.\nfn f() { todo!() }\n",
            false
        ),
        []
    );
}

#[test]
fn todo_in_tests_allowed() {
    let cases = [
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn a() { todo!() }\n}\n",
        "#[cfg(all(test, not(loom)))]\nmod tests {\n    fn a() { unimplemented!() }\n}\n",
        "#[test]\n#[should_panic]\nfn a() {\n    todo!()\n}\n",
        "fn f() -> &'static str {\n    \"todo!()\"\n}\n",
    ];
    for body in cases {
        assert_eq!(violations_in(body), [], "{body}");
    }
    assert_eq!(
        check_source("//! Integration test.\nfn a() { todo!() }\n", true),
        []
    );
}

#[test]
fn test_module_files_found() {
    let lexed =
        lex("#[cfg(test)]\nmod tests;\nmod real;\n#[cfg(test)]\n#[path = \"x.rs\"]\nmod other;\n");
    let names: Vec<String> = test_items(&lexed.code, &attributes(&lexed.code))
        .into_iter()
        .filter_map(|item| match item {
            TestItem::ModuleFile(name) => Some(name),
            TestItem::Region(..) => None,
        })
        .collect();
    assert_eq!(names, ["tests", "other"]);
    assert_eq!(
        module_dir(Path::new("/w/crates/a/src/lib.rs")),
        Path::new("/w/crates/a/src")
    );
    assert_eq!(
        module_dir(Path::new("/w/crates/a/src/sched.rs")),
        Path::new("/w/crates/a/src/sched")
    );
    assert_eq!(
        module_dir(Path::new("/w/crates/a/src/sched/mod.rs")),
        Path::new("/w/crates/a/src/sched")
    );
}

#[test]
fn workspace_walk_reports_planted_violation() {
    // A scratch workspace with one clean and one bad crate proves that the walk reads files
    // and reports path and line.
    let root = std::env::temp_dir().join(format!("goro-tidy-{}", std::process::id()));
    let clean = root.join("crates/clean/src");
    let bad = root.join("crates/bad/src");
    let this_file = root.join("xtask/tests");
    for dir in [&clean, &bad, &this_file] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(root.join("crates/bad/Cargo.toml"), "").unwrap();
    std::fs::write(clean.join("lib.rs"), "//! Clean.\n").unwrap();
    std::fs::write(
        bad.join("lib.rs"),
        "//! Bad.\n#[cfg(test)]\nmod tests;\nfn f() {\n    unsafe { g() }\n}\n",
    )
    .unwrap();
    std::fs::write(
        bad.join("tests.rs"),
        "//! Test module.\nfn h() { todo!() }\n",
    )
    .unwrap();
    std::fs::write(this_file.join("tidy.rs"), "//! Stand-in.\n").unwrap();
    let report = check_workspace(&root);
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        report,
        [format!("crates/bad/src/lib.rs:5: {MISSING_SAFETY_COMMENT}")]
    );
}
