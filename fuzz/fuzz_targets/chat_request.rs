//! Chat request bodies: never panic; a body that validates has a member map, and the upstream body
//! built from it is valid JSON with the model replaced and `route` removed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::pipeline::parse::{build_upstream_body, parse_chat_request, top_level_members};

fuzz_target!(|data: &[u8]| {
    let mut scratch = data.to_vec();
    let ok = parse_chat_request(&mut scratch).is_ok();
    if ok {
        let members = top_level_members(data).expect("a valid request maps");
        let mut out = Vec::new();
        build_upstream_body(data, &members, "m\"odel", true, None, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("upstream body is JSON");
        assert_eq!(v["model"], "m\"odel");
        assert!(v.get("route").is_none());
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
});
