//! Parsing of one complete SSE event block (`event:`/`data:` lines). Splitting the upstream byte
//! stream into blocks is the gateway's SSE reader (`http/sse`); this only reads a block it hands over.

use std::borrow::Cow;

/// Parses one complete SSE event block (without or with its trailing blank line) into its event name
/// and data. Several `data:` lines are joined with `\n` (the only case that allocates); `id:`,
/// `retry:` and `:` comment lines are ignored; lines may end in `\n`, `\r\n` or `\r`. A block
/// without `data:` lines yields empty data. A name that is not UTF-8 is treated as absent.
pub fn parse_sse_event(block: &[u8]) -> (Option<&str>, Cow<'_, [u8]>) {
    let mut event = None;
    let mut data: Option<Cow<'_, [u8]>> = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A bare `\r` line ending inside the block: treat the pieces as lines too.
        for line in line.split(|&b| b == b'\r') {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // comment
                Some(p) => {
                    let v = &line[p + 1..];
                    (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            match field {
                b"event" => event = std::str::from_utf8(value).ok(),
                b"data" => {
                    data = Some(match data {
                        None => Cow::Borrowed(value),
                        Some(prev) => {
                            let mut v = prev.into_owned();
                            v.push(b'\n');
                            v.extend_from_slice(value);
                            Cow::Owned(v)
                        }
                    })
                }
                _ => {}
            }
        }
    }
    (event, data.unwrap_or(Cow::Borrowed(b"")))
}

/// Splits a whole SSE transcript into its event blocks (each ending at a blank line). Used by tests,
/// the mock and the bench; the gateway has its own incremental reader.
pub(crate) fn split_sse_blocks(text: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < text.len() {
        if text[i] == b'\n' && text[i + 1] == b'\n' {
            blocks.push(&text[start..i + 2]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if text[start..].iter().any(|b| !b.is_ascii_whitespace()) {
        blocks.push(&text[start..]);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_data() {
        let (e, d) = parse_sse_event(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(e, Some("message_stop"));
        assert_eq!(&*d, b"{\"type\":\"message_stop\"}");
        assert!(matches!(d, Cow::Borrowed(_)));
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let (e, d) =
            parse_sse_event(b": keep-alive\r\nevent:ping\r\nid: 7\r\ndata: a\r\ndata:b\r\n\r\n");
        assert_eq!(e, Some("ping"));
        assert_eq!(&*d, b"a\nb");
        let (e, d) = parse_sse_event(b"data: [DONE]");
        assert_eq!(e, None);
        assert_eq!(&*d, b"[DONE]");
        let (e, d) = parse_sse_event(b"event: x\rdata: y\r\r");
        assert_eq!((e, &*d), (Some("x"), &b"y"[..]));
    }

    #[test]
    fn no_data_is_empty() {
        let (e, d) = parse_sse_event(b"event: ping\n\n");
        assert_eq!(e, Some("ping"));
        assert!(d.is_empty());
    }

    #[test]
    fn split_blocks_at_blank_lines() {
        let t = b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n";
        let b = split_sse_blocks(t);
        assert_eq!(
            b,
            vec![&b"event: a\ndata: 1\n\n"[..], &b"event: b\ndata: 2\n\n"[..]]
        );
        // Whatever prefix of a transcript we cut, the complete blocks parse the same.
        for cut in 0..=t.len() {
            let blocks = split_sse_blocks(&t[..cut]);
            for blk in blocks.iter().filter(|b| b.ends_with(b"\n\n")) {
                assert!(parse_sse_event(blk).0.is_some());
            }
        }
    }
}
