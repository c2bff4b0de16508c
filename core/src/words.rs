//! How one word is written on a command line, for the places of the core
//! that write a command's words back (a grant in an error message). The
//! tokenizer of the command language (`liveswap-ops`) reads exactly this.

/// `word` as one word of a command line: as it is if the tokenizer would
/// read it back unchanged, otherwise in double quotes with escapes.
pub fn quote(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '#');
    if plain {
        return word.into();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out.into()
}
