//! Upstream response heads and usage extraction: never panic; parsed heads are consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::http::client::{parse_response_head, ResponseFraming};
use tierflow::pipeline::parse::find_usage;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((h, n))) = parse_response_head(data) {
        assert!(n <= data.len());
        if h.framing == ResponseFraming::UntilClose {
            assert!(!h.keep_alive);
        }
    }
    let _ = find_usage(data);
});
