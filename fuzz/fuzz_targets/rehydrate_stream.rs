//! Streaming rehydration equals whole-body rehydration for any split of any stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tierflow::scanner::{JsonEscaper, PiiKind, Rehydrator, Vault};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mut vault = Vault::new();
    let e = vault.insert(PiiKind::Email, "a\"b@c.example").to_string();
    let p = vault.insert(PiiKind::Password, "p\\w").to_string();
    // Interleave fuzz bytes with placeholders so matches and near-misses both occur.
    let mut stream = Vec::new();
    for (i, chunk) in data[1..].chunks(7).enumerate() {
        stream.extend_from_slice(chunk);
        if i % 3 == 0 {
            stream.extend_from_slice(e.as_bytes());
        } else if i % 3 == 1 {
            stream.extend_from_slice(&p.as_bytes()[..p.len() - (i % 4)]);
        }
    }
    let whole = vault.rehydrate(&stream);
    let step = (data[0] as usize % 13) + 1;
    let mut r = Rehydrator::new(&vault, JsonEscaper::json());
    let mut out = Vec::new();
    for piece in stream.chunks(step) {
        r.push(piece, &mut out);
    }
    r.finish(&mut out);
    assert_eq!(out, whole);
});
