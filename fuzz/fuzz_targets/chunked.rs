//! Chunked bodies: never panic; decoding the input in two pieces (split anywhere) gives the same
//! bytes and the same end as decoding it whole; re-encoding decoded bytes decodes back to them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::http::chunked::{write_chunk, write_last_chunk, ChunkedDecoder};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len().max(1);
    let input = &data[1..];
    let mut whole = Vec::new();
    let r_whole = ChunkedDecoder::new().decode(input, &mut whole);
    let mut d = ChunkedDecoder::new();
    let mut pieces = Vec::new();
    let (a, b) = input.split_at(split.min(input.len()));
    let r1 = d.decode(a, &mut pieces);
    let r_pieces = match r1 {
        Ok(r) if r.done => Ok((r.consumed, true)),
        Ok(r) => {
            assert_eq!(r.consumed, a.len());
            d.decode(b, &mut pieces).map(|r2| (a.len() + r2.consumed, r2.done))
        }
        Err(e) => Err(e),
    };
    match (r_whole, r_pieces) {
        (Ok(w), Ok((consumed, done))) => {
            assert_eq!(w.done, done);
            if w.done {
                assert_eq!(w.consumed, consumed);
            }
            assert_eq!(whole, pieces);
        }
        (Err(_), Err(_)) => {}
        (w, p) => panic!("whole {w:?} vs pieces {p:?}"),
    }
    let mut enc = Vec::new();
    write_chunk(&mut enc, &whole);
    write_last_chunk(&mut enc);
    let mut back = Vec::new();
    let r = ChunkedDecoder::new().decode(&enc, &mut back).unwrap();
    assert!(r.done && r.consumed == enc.len());
    assert_eq!(back, whole);
});
