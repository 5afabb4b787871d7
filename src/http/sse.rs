//! Server-sent events framing: finding complete events in a byte stream and reading their `event:`
//! and `data:` fields. Events are forwarded as they complete; nothing waits for the whole stream.

/// Length of the prefix of `buf` that holds only complete events (ends right after a blank line),
/// or 0 if no event is complete yet. Accepts `\n\n`, `\r\n\r\n` and `\r\r` separators.
pub fn complete_prefix(buf: &[u8]) -> usize {
    // Jumps between line-break bytes with memchr (SIMD); event payloads are long JSON lines.
    let mut end = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        i += off;
        match buf[i] {
            b'\n' => {
                if i + 1 < buf.len() && buf[i + 1] == b'\n' {
                    end = i + 2;
                    i += 2;
                    continue;
                }
                if i + 2 < buf.len() && buf[i + 1] == b'\r' && buf[i + 2] == b'\n' {
                    end = i + 3;
                    i += 3;
                    continue;
                }
            }
            _ if i + 1 < buf.len() && buf[i + 1] == b'\r' => {
                end = i + 2;
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    end
}

/// Iterates the events (without their terminating blank line) in a complete-events slice.
pub fn events(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        while !rest.is_empty() {
            let (end, skip) = match find_blank_line(rest) {
                Some(x) => x,
                None => (rest.len(), rest.len()),
            };
            let ev = &rest[..end];
            rest = &rest[skip..];
            if !ev.iter().all(|b| *b == b'\r' || *b == b'\n') {
                return Some(ev);
            }
        }
        None
    })
}

/// (end of event, start of next) for the first blank line in `buf`.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        i += off;
        if buf[i] == b'\n' {
            if i + 1 < buf.len() && buf[i + 1] == b'\n' {
                return Some((i + 1, i + 2));
            }
            if i + 2 < buf.len() && buf[i + 1] == b'\r' && buf[i + 2] == b'\n' {
                return Some((i + 1, i + 3));
            }
        } else if i + 1 < buf.len() && buf[i + 1] == b'\r' {
            return Some((i + 1, i + 2));
        }
        i += 1;
    }
    None
}

/// The fields of one event that the gateway reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event<'a> {
    pub event: Option<&'a [u8]>,
    /// The data lines; a single line borrows, several are joined with `\n`.
    pub data: std::borrow::Cow<'a, [u8]>,
    pub has_data: bool,
}

/// Parses one event block (as yielded by `events`).
pub fn parse_event(block: &[u8]) -> Event<'_> {
    let mut ev = Event::default();
    let mut start = 0;
    let lines = memchr::memchr_iter(b'\n', block)
        .chain(std::iter::once(block.len()))
        .map(|end| {
            let line = &block[start..end];
            start = end + 1;
            line
        });
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => ev.event = Some(value),
            b"data" => {
                if ev.has_data {
                    let d = ev.data.to_mut();
                    d.push(b'\n');
                    d.extend_from_slice(value);
                } else {
                    ev.data = std::borrow::Cow::Borrowed(value);
                    ev.has_data = true;
                }
            }
            _ => {}
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: comment\n\nevent: ping\ndata: x\ndata: y\n\ndata: [DONE]\r\n\r\ndata: part";

    #[test]
    fn splits_complete_events() {
        let n = complete_prefix(STREAM);
        assert_eq!(&STREAM[n..], b"data: part");
        let evs: Vec<_> = events(&STREAM[..n]).map(parse_event).collect();
        assert_eq!(evs.len(), 4);
        assert_eq!(&*evs[0].data, b"{\"a\":1}");
        assert!(!evs[1].has_data);
        assert_eq!(evs[2].event, Some(&b"ping"[..]));
        assert_eq!(&*evs[2].data, b"x\ny");
        assert_eq!(&*evs[3].data, b"[DONE]");
    }

    #[test]
    fn every_split_point_yields_same_events() {
        let whole: Vec<Vec<u8>> = events(&STREAM[..complete_prefix(STREAM)])
            .map(|e| parse_event(e).data.into_owned())
            .collect();
        for cut in 0..STREAM.len() {
            let mut pending = Vec::new();
            let mut got = Vec::new();
            for part in [&STREAM[..cut], &STREAM[cut..]] {
                pending.extend_from_slice(part);
                let n = complete_prefix(&pending);
                got.extend(events(&pending[..n]).map(|e| parse_event(e).data.into_owned()));
                pending.drain(..n);
            }
            assert_eq!(got, whole, "cut {cut}");
        }
    }
}
