//! Request heads: never panic; a complete head's ranges lie inside the input; a head parsed whole
//! parses the same when the input is cut anywhere after it, and is partial when cut before it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::http::head::parse_request_head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = parse_request_head(data, 64, 16384) {
        assert!(h.head_len <= data.len());
        assert!(h.path.end <= h.head_len);
        for r in [&h.authorization, &h.app, &h.env, &h.x_api_key].into_iter().flatten() {
            assert!(r.end <= h.head_len);
        }
        if h.head_len > 1 {
            let cut = &data[..h.head_len - 1];
            assert!(matches!(parse_request_head(cut, 64, 16384), Ok(None) | Err(_)));
        }
        let again = parse_request_head(&data[..h.head_len], 64, 16384).unwrap().unwrap();
        assert_eq!(again.head_len, h.head_len);
        assert_eq!(again.framing, h.framing);
    }
});
