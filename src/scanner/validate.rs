//! Checksums and look-alike rejection for PII candidates: Luhn, IBAN mod-97, national-ID check
//! digits, IP ranges, dates. Pure functions over byte slices; which validator runs for which
//! rule is named in `patterns/pii.txt` and dispatched by `pii.rs`.

/// Digits of `s`, ignoring spaces, dashes and dots; `None` if other characters occur.
fn digits(s: &[u8], out: &mut [u8; 32]) -> Option<usize> {
    let mut n = 0;
    for &c in s {
        match c {
            b'0'..=b'9' => {
                if n == out.len() {
                    return None;
                }
                out[n] = c - b'0';
                n += 1;
            }
            b' ' | b'-' | b'.' => {}
            _ => return None,
        }
    }
    Some(n)
}

/// Luhn check over 13–19 digits, rejecting a single repeated digit.
pub fn luhn(s: &[u8]) -> bool {
    luhn_len(s, 13..=19)
}

/// Luhn check over a digit count in `lens` (12-digit Maestro numbers need a card cue; the
/// caller decides), rejecting a single repeated digit.
pub fn luhn_len(s: &[u8], lens: std::ops::RangeInclusive<usize>) -> bool {
    let mut d = [0u8; 32];
    let Some(n) = digits(s, &mut d) else {
        return false;
    };
    if !lens.contains(&n) || d[..n].iter().all(|&x| x == d[0]) {
        return false;
    }
    let mut sum = 0u32;
    for (i, &x) in d[..n].iter().rev().enumerate() {
        let mut v = x as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Card separators must be consistent: all groups split by the same character (or none).
pub fn card_shape(s: &[u8]) -> bool {
    let seps: Vec<u8> = s.iter().copied().filter(|c| !c.is_ascii_digit()).collect();
    seps.windows(2).all(|w| w[0] == w[1]) && luhn(s)
}

/// IBAN: country letters, two check digits, mod-97 == 1, length per ISO 13616 range.
pub fn iban(s: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    let mut n = 0;
    for &c in s {
        if c == b' ' || c == b'-' {
            continue;
        }
        if n == buf.len() || !c.is_ascii_alphanumeric() {
            return false;
        }
        buf[n] = c.to_ascii_uppercase();
        n += 1;
    }
    if !(15..=34).contains(&n) || !buf[0].is_ascii_uppercase() || !buf[1].is_ascii_uppercase() {
        return false;
    }
    if !buf[2].is_ascii_digit() || !buf[3].is_ascii_digit() {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in buf[4..n].iter().chain(buf[..4].iter()) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + (c - b'0') as u32) % 97;
        } else {
            let v = (c - b'A' + 10) as u32;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

/// US SSN area/group/serial ranges (no 000/666/9xx area, no 00 group, no 0000 serial).
pub fn ssn(s: &[u8]) -> bool {
    let mut d = [0u8; 32];
    let Some(n) = digits(s, &mut d) else {
        return false;
    };
    if n != 9 {
        return false;
    }
    let area = d[0] as u32 * 100 + d[1] as u32 * 10 + d[2] as u32;
    let group = d[3] * 10 + d[4];
    let serial = d[5] as u32 * 1000 + d[6] as u32 * 100 + d[7] as u32 * 10 + d[8] as u32;
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// IPv4 dotted quad with every octet ≤ 255 and no leading zeros.
pub fn ipv4(s: &[u8]) -> bool {
    let mut parts = 0;
    for p in s.split(|&c| c == b'.') {
        parts += 1;
        if p.is_empty()
            || p.len() > 3
            || !p.iter().all(u8::is_ascii_digit)
            || (p.len() > 1 && p[0] == b'0')
        {
            return false;
        }
        let v: u32 = p.iter().fold(0, |a, &c| a * 10 + (c - b'0') as u32);
        if v > 255 {
            return false;
        }
    }
    parts == 4
}

/// IPv6: parses with std (covers `::` compression); needs at least 2 colons and a hex letter or
/// `::` so that times like `12:30:45` do not pass.
pub fn ipv6(s: &[u8]) -> bool {
    let Ok(t) = std::str::from_utf8(s) else {
        return false;
    };
    let colons = t.bytes().filter(|&c| c == b':').count();
    colons >= 2 && t.parse::<std::net::Ipv6Addr>().is_ok() && (t.contains("::") || colons == 7)
}

/// Calendar date in d/m/y, m/d/y or y-m-d with a plausible birth year (1900–2025).
pub fn birth_date(s: &[u8]) -> bool {
    let parts: Vec<&[u8]> = s.split(|&c| c == b'/' || c == b'-' || c == b'.').collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    let num = |p: &[u8]| p.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32);
    let (a, b, c) = (num(parts[0]), num(parts[1]), num(parts[2]));
    let (y, m1, m2) = if parts[0].len() == 4 {
        (a, b, c)
    } else {
        (c, a, b)
    };
    let year_ok = (1900..=2025).contains(&y) || (parts[2].len() == 2 && parts[0].len() != 4);
    let md = |m: u32, d: u32| (1..=12).contains(&m) && (1..=31).contains(&d);
    year_ok && (md(m1, m2) || md(m2, m1))
}

/// Polish PESEL: 11 digits, weights 1-3-7-9, valid month encoding.
pub fn pesel(s: &[u8]) -> bool {
    let mut d = [0u8; 32];
    if digits(s, &mut d) != Some(11) {
        return false;
    }
    let w = [1u32, 3, 7, 9, 1, 3, 7, 9, 1, 3];
    let sum: u32 = (0..10).map(|i| d[i] as u32 * w[i]).sum();
    let month = (d[2] * 10 + d[3]) % 20;
    (10 - sum % 10) % 10 == d[10] as u32 && (1..=12).contains(&month)
}

/// Dutch BSN: 9 digits, "11-proof" with weights 9..2 and -1.
pub fn bsn(s: &[u8]) -> bool {
    let mut d = [0u8; 32];
    if digits(s, &mut d) != Some(9) {
        return false;
    }
    let mut sum: i32 = 0;
    for i in 0..8 {
        sum += d[i] as i32 * (9 - i as i32);
    }
    sum -= d[8] as i32;
    sum != 0 && sum % 11 == 0
}

/// Brazilian CPF: 11 digits with two mod-11 check digits, not all equal.
pub fn cpf(s: &[u8]) -> bool {
    let mut d = [0u8; 32];
    if digits(s, &mut d) != Some(11) || d[..11].iter().all(|&x| x == d[0]) {
        return false;
    }
    let check = |len: usize| {
        let sum: u32 = (0..len)
            .map(|i| d[i] as u32 * (len as u32 + 1 - i as u32))
            .sum();
        let r = sum * 10 % 11;
        if r == 10 {
            0
        } else {
            r
        }
    };
    check(9) == d[9] as u32 && check(10) == d[10] as u32
}

/// Spanish DNI/NIE: 8 digits (NIE: X/Y/Z + 7) and the mod-23 control letter.
pub fn nif(s: &[u8]) -> bool {
    let t: Vec<u8> = s
        .iter()
        .copied()
        .filter(|&c| c != b'-' && c != b' ')
        .collect();
    if t.len() != 9 {
        return false;
    }
    let (num, letter) = (&t[..8], t[8].to_ascii_uppercase());
    let mut v: u32 = 0;
    for (i, &c) in num.iter().enumerate() {
        let x = match (i, c.to_ascii_uppercase()) {
            (0, b'X') => 0,
            (0, b'Y') => 1,
            (0, b'Z') => 2,
            (_, c) if c.is_ascii_digit() => (c - b'0') as u32,
            _ => return false,
        };
        v = v * 10 + x;
    }
    b"TRWAGMYFPDXBNJZSQVHLCKE"[(v % 23) as usize] == letter
}

/// French INSEE (NIR): 13 digits + 2-digit key = 97 - n mod 97 (Corsica 2A/2B handled).
pub fn insee(s: &[u8]) -> bool {
    let t: Vec<u8> = s.iter().copied().filter(|&c| c != b' ').collect();
    if t.len() != 15 || !(t[0] == b'1' || t[0] == b'2' || t[0] == b'7' || t[0] == b'8') {
        return false;
    }
    let mut n: u64 = 0;
    for (i, &c) in t[..13].iter().enumerate() {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u64,
            b'A' | b'a' if i == 6 => 0,
            b'B' | b'b' if i == 6 => 0,
            _ => return false,
        };
        n = n * 10 + v;
    }
    if t[6].eq_ignore_ascii_case(&b'A') {
        n -= 1_000_000;
    } else if t[6].eq_ignore_ascii_case(&b'B') {
        n -= 2_000_000;
    }
    if !t[13..].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let key = ((t[13] - b'0') * 10 + (t[14] - b'0')) as u64;
    97 - n % 97 == key
}

/// Italian codice fiscale: 16 chars, check letter from odd/even tables.
pub fn codice_fiscale(s: &[u8]) -> bool {
    if s.len() != 16 || !s.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let mut sum = 0;
    for (i, &c) in s[..15].iter().enumerate() {
        let c = c.to_ascii_uppercase();
        let idx = if c.is_ascii_digit() {
            (c - b'0') as usize
        } else {
            (c - b'A') as usize
        };
        sum += if i % 2 == 0 { ODD[idx] } else { idx as u32 };
    }
    (b'A' + (sum % 26) as u8) == s[15].to_ascii_uppercase()
}

/// Indian Aadhaar: 12 digits, not starting with 0/1, Verhoeff check digit.
pub fn aadhaar(s: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut d = [0u8; 32];
    if digits(s, &mut d) != Some(12) || d[0] < 2 {
        return false;
    }
    let mut c = 0u8;
    for (i, &x) in d[..12].iter().rev().enumerate() {
        c = D[c as usize][P[i % 8][x as usize] as usize];
    }
    c == 0
}

/// UK National Insurance number prefix rules (no D,F,I,Q,U,V; second letter not O; excluded pairs).
pub fn nino(s: &[u8]) -> bool {
    let t: Vec<u8> = s
        .iter()
        .copied()
        .filter(|&c| c != b' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if t.len() != 9 || !t[2..8].iter().all(u8::is_ascii_digit) || !matches!(t[8], b'A'..=b'D') {
        return false;
    }
    let bad = |c: u8| matches!(c, b'D' | b'F' | b'I' | b'Q' | b'U' | b'V');
    let pair = &t[..2];
    !bad(t[0])
        && !bad(t[1])
        && t[1] != b'O'
        && !matches!(pair, b"BG" | b"GB" | b"NK" | b"KN" | b"TN" | b"NT" | b"ZZ")
}

/// A token that is a hex digest or UUID (git SHA, hash), never an API key by itself.
pub fn is_digest_like(s: &[u8]) -> bool {
    let hex = s.iter().filter(|c| c.is_ascii_hexdigit()).count();
    let dashes = s.iter().filter(|&&c| c == b'-').count();
    (hex + dashes == s.len()) && matches!(hex, 7 | 40 | 64 | 128)
        || (dashes == 4 && s.len() == 36 && hex == 32)
}

/// Shannon-like diversity check for generic secrets: enough distinct characters and classes.
pub fn looks_random(s: &[u8]) -> bool {
    if s.len() < 8 {
        return false;
    }
    let mut seen = [false; 128];
    let mut distinct = 0;
    let (mut lower, mut upper, mut digit, mut other) = (false, false, false, false);
    for &c in s {
        if c < 128 && !seen[c as usize] {
            seen[c as usize] = true;
            distinct += 1;
        }
        match c {
            b'a'..=b'z' => lower = true,
            b'A'..=b'Z' => upper = true,
            b'0'..=b'9' => digit = true,
            _ => other = true,
        }
    }
    let classes = lower as u8 + upper as u8 + digit as u8 + other as u8;
    distinct * 2 >= s.len().min(24) && classes >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a Luhn check digit to `body`.
    fn with_luhn(body: &str) -> String {
        for d in 0..10 {
            let s = format!("{body}{d}");
            if luhn(s.as_bytes()) {
                return s;
            }
        }
        unreachable!()
    }

    #[test]
    fn luhn_accepts_valid_and_rejects_neighbours() {
        let card = with_luhn("411111111111111");
        assert!(luhn(card.as_bytes()));
        let mut bad = card.clone().into_bytes();
        bad[5] = if bad[5] == b'9' { b'0' } else { bad[5] + 1 };
        assert!(!luhn(&bad));
        assert!(!luhn(b"0000000000000000"));
        assert!(card_shape(
            format!(
                "{} {} {} {}",
                &card[..4],
                &card[4..8],
                &card[8..12],
                &card[12..]
            )
            .as_bytes()
        ));
        assert!(!card_shape(
            format!("{}-{} {}", &card[..4], &card[4..8], &card[8..]).as_bytes()
        ));
    }

    #[test]
    fn iban_mod97() {
        // build a valid GB IBAN from a BBAN by computing the check digits
        let bban = "WEST12345698765432";
        let mut rem = 0u32;
        for c in bban.bytes().chain("GB00".bytes()) {
            rem = if c.is_ascii_digit() {
                (rem * 10 + (c - b'0') as u32) % 97
            } else {
                (rem * 100 + (c - b'A' + 10) as u32) % 97
            };
        }
        let iban_s = format!("GB{:02}{bban}", 98 - rem);
        assert!(iban(iban_s.as_bytes()), "{iban_s}");
        let spaced: String = iban_s
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(iban(spaced.as_bytes()));
        assert!(!iban(iban_s.replace("WEST", "WEXT").as_bytes()));
    }

    #[test]
    fn national_ids() {
        // PESEL: compute check digit
        let body = [4u8, 4, 0, 5, 1, 4, 0, 1, 3, 5];
        let w = [1u32, 3, 7, 9, 1, 3, 7, 9, 1, 3];
        let sum: u32 = body.iter().zip(w).map(|(&d, w)| d as u32 * w).sum();
        let p: String = body
            .iter()
            .map(|d| (b'0' + d) as char)
            .chain([(b'0' + ((10 - sum % 10) % 10) as u8) as char])
            .collect();
        assert!(pesel(p.as_bytes()));
        assert!(!pesel(b"44051401350") || p == "44051401350");
        // DNI letter
        let n = 12345678u32;
        let dni = format!(
            "{n}{}",
            b"TRWAGMYFPDXBNJZSQVHLCKE"[(n % 23) as usize] as char
        );
        assert!(nif(dni.as_bytes()));
        assert!(!nif(b"12345678A"));
        // BSN 11-proof: 111222333 -> 9+8+7+12+10+8+9+6-3 = 66
        assert!(bsn(b"111222333"));
        assert!(!bsn(b"111222334"));
        // CPF check digits
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let c1 = {
            let s: u32 = (0..9).map(|i| b[i] as u32 * (10 - i as u32)).sum();
            let r = s * 10 % 11;
            if r == 10 {
                0
            } else {
                r
            }
        };
        let mut all = b.to_vec();
        all.push(c1 as u8);
        let c2 = {
            let s: u32 = (0..10).map(|i| all[i] as u32 * (11 - i as u32)).sum();
            let r = s * 10 % 11;
            if r == 10 {
                0
            } else {
                r
            }
        };
        all.push(c2 as u8);
        let cpf_s: String = all.iter().map(|d| (b'0' + d) as char).collect();
        assert!(cpf(cpf_s.as_bytes()));
        assert!(!cpf(b"11111111111"));
        // INSEE key
        let n13: u64 = 1850578006084;
        let s = format!("{n13}{:02}", 97 - n13 % 97);
        assert!(insee(s.as_bytes()));
        assert!(!insee(
            format!("{n13}{:02}", (97 - n13 % 97 + 1) % 100).as_bytes()
        ));
        assert!(codice_fiscale(b"RSSMRA85T10A562S"));
        assert!(!codice_fiscale(b"RSSMRA85T10A562T"));
        assert!(aadhaar(b"234123412346"));
        assert!(!aadhaar(b"234123412345"));
        assert!(nino(b"AB123456C"));
        assert!(!nino(b"QQ123456C"));
    }

    #[test]
    fn ips_dates_and_lookalikes() {
        assert!(ipv4(b"192.168.1.10"));
        assert!(!ipv4(b"10.1.22.294"));
        assert!(!ipv4(b"1.2.3"));
        assert!(ipv6(b"2001:db8::1"));
        assert!(ipv6(b"a79b:1b28:559f:ea8f:ed2f:93df:a902:3480"));
        assert!(!ipv6(b"12:30:45"));
        assert!(birth_date(b"12/29/1968"));
        assert!(birth_date(b"1960-08-28"));
        assert!(!birth_date(b"13/13/1990"));
        assert!(ssn(b"123-45-6789"));
        assert!(!ssn(b"666-45-6789"));
        assert!(!ssn(b"123-00-6789"));
        assert!(is_digest_like(b"0123456789abcdef0123456789abcdef01234567"));
        assert!(is_digest_like(b"7abb22a9-2cb4-450c-ad73-27fe66317d9a"));
        assert!(!is_digest_like(b"5a66f5b1bc596686ec76dc10a2912392"));
        assert!(looks_random(b"Qx8vT2mLp9"));
        assert!(!looks_random(b"aaaaaaaaaa"));
    }
}
