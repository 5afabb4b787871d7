//! Fuzz the evasion normalizer and full scan: no panic, bounded decoded output, spans on char
//! boundaries, sorted and non-overlapping.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tierflow::scanner::normalize::{build_variants, Variants, MAX_DECODED_BYTES};
use tierflow::scanner::{ScanOptions, Scanner};

static SCANNER: OnceLock<Scanner> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut v = Variants::default();
    build_variants(text, &mut v);
    for (_, t) in &v.texts {
        assert!(t.len() <= 4 * text.len() + 2 * MAX_DECODED_BYTES + 64);
    }
    let s = SCANNER.get_or_init(|| {
        // Through the compiled-database cache: a fuzz run must not spend its time compiling.
        let dir = tierflow::config::default_cache_dir().unwrap_or_else(|| std::env::temp_dir().join("tierflow"));
        Scanner::embedded_cached(Some(&dir)).unwrap().0
    });
    let mut scratch = s.new_scratch().unwrap();
    let r = s.scan(&mut scratch, text, &ScanOptions::default());
    let mut last = 0;
    for span in &r.pii {
        assert!(span.start >= last && span.start < span.end && span.end <= text.len());
        assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        last = span.end;
    }
});
