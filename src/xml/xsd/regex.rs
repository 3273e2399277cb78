//! XSD regular expressions (XML Schema Part 2, appendix F) translated for the `regex` crate.
//!
//! XSD patterns are implicitly anchored, treat `^` and `$` as ordinary characters, use `-[...]`
//! for class subtraction, and have their own `.`, `\s`, `\w`, `\i`, `\c` and `\p{IsBlock}`. The
//! translation is a single scan; anything it does not know is refused with a reason, never
//! passed through. Compiled programs are size-limited.

use regex::{Regex, RegexBuilder};
use regex_automata::dfa::{Automaton, dense};
use regex_automata::{Anchored, Input};

/// Compiled size limit for one pattern: patterns are schema-authored, but a typo like
/// `\p{L}{1,100000}` must not turn into a memory problem.
const SIZE_LIMIT: usize = 1 << 20;

/// NameStartChar and NameChar of XML 1.0 fifth edition (what `\i` and `\c` stand for).
const NAME_START: &str = r":A-Z_a-z\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{2FF}\u{370}-\u{37D}\u{37F}-\u{1FFF}\u{200C}-\u{200D}\u{2070}-\u{218F}\u{2C00}-\u{2FEF}\u{3001}-\u{D7FF}\u{F900}-\u{FDCF}\u{FDF0}-\u{FFFD}\u{10000}-\u{EFFFF}";
const NAME_EXTRA: &str = r"\-.0-9\u{B7}\u{300}-\u{36F}\u{203F}-\u{2040}";

/// The Unicode blocks `\p{IsX}` may name (the ones a European identity schema plausibly uses).
const BLOCKS: &[(&str, &str)] = &[
    ("BasicLatin", r"\u{0}-\u{7F}"),
    ("Latin-1Supplement", r"\u{80}-\u{FF}"),
    ("LatinExtended-A", r"\u{100}-\u{17F}"),
    ("LatinExtended-B", r"\u{180}-\u{24F}"),
    ("IPAExtensions", r"\u{250}-\u{2AF}"),
    ("SpacingModifierLetters", r"\u{2B0}-\u{2FF}"),
    ("CombiningDiacriticalMarks", r"\u{300}-\u{36F}"),
    ("Greek", r"\u{370}-\u{3FF}"),
    ("Cyrillic", r"\u{400}-\u{4FF}"),
    ("Armenian", r"\u{530}-\u{58F}"),
    ("Hebrew", r"\u{590}-\u{5FF}"),
    ("Arabic", r"\u{600}-\u{6FF}"),
    ("LatinExtendedAdditional", r"\u{1E00}-\u{1EFF}"),
    ("GreekExtended", r"\u{1F00}-\u{1FFF}"),
    ("GeneralPunctuation", r"\u{2000}-\u{206F}"),
];

/// Translates an XSD pattern into an anchored `regex` pattern.
///
/// # Errors
/// A pattern construct XSD does not define or this translator does not support.
pub fn translate(xsd: &str) -> Result<String, String> {
    let chars: Vec<char> = xsd.chars().collect();
    let mut out = String::with_capacity(xsd.len() + 16);
    out.push_str("^(?:");
    let mut i = 0;
    // Depth of character classes we are inside (subtraction nests them).
    let mut class_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let (s, used) = escape(&chars[i..], class_depth > 0)?;
                out.push_str(&s);
                i += used;
                continue;
            }
            '[' => {
                class_depth += 1;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
            }
            '-' if class_depth > 0 && chars.get(i + 1) == Some(&'[') => {
                // class subtraction: [a-z-[aeiou]] -> [a-z--[aeiou]]
                out.push_str("--");
            }
            '.' if class_depth == 0 => out.push_str(r"[^\n\r]"),
            '^' | '$' if class_depth == 0 => {
                out.push('\\');
                out.push(c);
            }
            '&' | '~' if class_depth > 0 => {
                out.push('\\');
                out.push(c);
            }
            '-' if class_depth > 0 => out.push('-'),
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    return Err("'(?' is not XSD regex syntax".into());
                }
                out.push('(');
            }
            '#' | ' ' if class_depth > 0 => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    if class_depth != 0 {
        return Err("unterminated character class".into());
    }
    out.push_str(")$");
    Ok(out)
}

/// A multi-character escape's class: as it is inside a class, bracketed outside one.
fn class(s: &str, in_class: bool) -> String {
    if in_class { s.to_owned() } else { format!("[{s}]") }
}

/// A negated multi-character escape's class (outside a class only).
fn negated(s: &str, in_class: bool) -> Result<String, String> {
    if in_class {
        Err("negated multi-character escape inside a class is not supported".to_owned())
    } else {
        Ok(format!("[^{s}]"))
    }
}

/// The Unicode general categories XSD's `\p{...}` may name.
const CATEGORIES: &[&str] = &[
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps", "Pe", "Pi",
    "Pf", "Po", "Z", "Zs", "Zl", "Zp", "S", "Sm", "Sc", "Sk", "So", "C", "Cc", "Cf", "Co", "Cn",
];

/// Translates the escape at the start of `chars`; returns the text and how many chars it used.
fn escape(chars: &[char], in_class: bool) -> Result<(String, usize), String> {
    let Some(&e) = chars.get(1) else { return Err("pattern ends with a backslash".into()) };
    let s = match e {
        'n' => r"\n".to_owned(),
        'r' => r"\r".to_owned(),
        't' => r"\t".to_owned(),
        '\\' | '|' | '.' | '-' | '^' | '?' | '*' | '+' | '{' | '}' | '(' | ')' | '[' | ']' => format!("\\{e}"),
        's' => class(r" \t\n\r", in_class),
        'S' => negated(r" \t\n\r", in_class)?,
        'd' => r"\p{Nd}".to_owned(),
        'D' => r"\P{Nd}".to_owned(),
        'w' => {
            if in_class {
                return Err(r"\w inside a class is not supported".into());
            }
            r"[^\p{P}\p{Z}\p{C}]".to_owned()
        }
        'W' => class(r"\p{P}\p{Z}\p{C}", in_class),
        'i' => class(NAME_START, in_class),
        'I' => negated(NAME_START, in_class)?,
        'c' => class(&format!("{NAME_START}{NAME_EXTRA}"), in_class),
        'C' => negated(&format!("{NAME_START}{NAME_EXTRA}"), in_class)?,
        'p' | 'P' => return property(chars, e == 'P', in_class),
        other => return Err(format!("unknown escape \\{other}")),
    };
    Ok((s, 2))
}

/// `\p{...}` or (`negate`) `\P{...}` at the start of `chars`: a Unicode block (`IsBasicLatin`)
/// or general category; the text and how many chars it used.
fn property(chars: &[char], negate: bool, in_class: bool) -> Result<(String, usize), String> {
    let e = if negate { 'P' } else { 'p' };
    let close = chars.iter().position(|&c| c == '}').ok_or("unterminated \\p{...}")?;
    if chars.get(2) != Some(&'{') {
        return Err("\\p must be followed by {".into());
    }
    let name: String = chars[3..close].iter().collect();
    let body = if let Some(block) = name.strip_prefix("Is") {
        let range = BLOCKS
            .iter()
            .find(|(n, _)| *n == block)
            .map(|(_, r)| *r)
            .ok_or_else(|| format!("unsupported Unicode block \\p{{{name}}}"))?;
        if negate { negated(range, in_class)? } else { class(range, in_class) }
    } else {
        if !CATEGORIES.contains(&name.as_str()) {
            return Err(format!("unknown Unicode category \\{e}{{{name}}}"));
        }
        format!("\\{e}{{{name}}}")
    };
    Ok((body, close + 1))
}

/// A compiled XSD pattern. Schema patterns are short (identifiers, codes, dates), so most
/// compile ahead of time into a complete DFA: a match is one walk of its table, with no cache
/// to take from a pool shared by the runtime's threads (what `Regex` does on every call). A
/// pattern whose DFA would pass the size limit is matched by `Regex`.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The translation (a `regex` pattern, anchored).
    translated: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Dfa(Box<dense::DFA<Vec<u32>>>),
    Regex(Regex),
}

impl Pattern {
    pub fn is_match(&self, value: &str) -> bool {
        match &self.matcher {
            // Anchored at the start, and the translation ends in `$`: any match is the whole value.
            Matcher::Dfa(dfa) => {
                matches!(dfa.try_search_fwd(&Input::new(value).anchored(Anchored::Yes)), Ok(Some(_)))
            }
            Matcher::Regex(re) => re.is_match(value),
        }
    }

    /// The pattern as translated for the `regex` crate.
    pub fn as_str(&self) -> &str {
        &self.translated
    }
}

/// Translates and compiles an XSD pattern.
///
/// # Errors
/// As [`translate`], or a translation that does not compile within the size limit.
pub fn compile(xsd: &str) -> Result<Pattern, String> {
    let translated = translate(xsd)?;
    let regex = RegexBuilder::new(&translated)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| format!("pattern {xsd:?} does not compile: {e}"))?;
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(Some(SIZE_LIMIT))
                .determinize_size_limit(Some(SIZE_LIMIT)),
        )
        .build(&translated);
    let matcher = match dfa {
        Ok(dfa) => Matcher::Dfa(Box::new(dfa)),
        Err(_) => Matcher::Regex(regex),
    };
    Ok(Pattern { translated, matcher })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p).unwrap().is_match(s)
    }

    /// The DFA and the `Regex` of a pattern agree, and a pattern too big for a DFA still works.
    #[test]
    fn compiled_forms_agree() {
        let cases = [
            ("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}", &["0123abcd-ABCD", "0123abcd-ABC", "0123abcd-ABCDE", "x"][..]),
            (r".+(Z|[+\-]\d{2}:\d{2})", &["2026-01-01T00:00:00Z", "é+01:00", "Z", "a\nZ", "1+0١:00"][..]),
            ("[A-Z]{3}|D<<", &["CZE", "D<<", "CZ", "D<<<", ""][..]),
            (r"\p{IsBasicLatin}+", &["abc", "é", "a^b$"][..]),
        ];
        for (p, values) in cases {
            let Matcher::Dfa(_) = compile(p).unwrap().matcher else { panic!("{p}: expected a DFA") };
            let re = Regex::new(&translate(p).unwrap()).unwrap();
            for v in values {
                assert_eq!(compile(p).unwrap().is_match(v), re.is_match(v), "{p} {v:?}");
            }
        }
        let big = r"\p{L}{1,10}";
        let Matcher::Regex(_) = compile(big).unwrap().matcher else { panic!("{big}: expected the Regex fallback") };
        assert!(m(big, "Žluťoučký") && !m(big, "1") && !m(big, "abcdefghijk"));
    }

    #[test]
    fn xsd_semantics() {
        assert!(m("[A-Z]{3}|D<<", "D<<"));
        assert!(!m("[A-Z]{3}|D<<", "XD<<"));
        assert!(m("a^b$", "a^b$"));
        assert!(m("[a-z-[aeiou]]+", "bcd"));
        assert!(!m("[a-z-[aeiou]]+", "bad"));
        assert!(m(r"\i\c*", "_a-1"));
        assert!(!m(r"\i\c*", "1a"));
        assert!(m(r"\p{IsBasicLatin}+", "abc"));
        assert!(!m(r"\p{IsBasicLatin}+", "é"));
        assert!(!m(".", "\n"));
        assert!(m(r"\d{2}", "42"));
        assert!(m(r"[+\-]\d", "-1"));
        assert!(m(r"[A-Za-z0-9/\-]{1,3}", "a/-"));
        assert!(compile(r"\p{IsKlingon}").is_err());
        assert!(compile("(?i)a").is_err());
        assert!(compile("[a").is_err());
    }
}
