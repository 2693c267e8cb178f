//! Fuzz target `header_fields`: `HeaderMap` (append, set, set_if_absent, remove and the
//! length-first lookups `get`, `get_all`, `contains`) against a plain list of pairs, and the
//! `Keep-Alive` reader (`__fuzz::keep_alive`) the connection pool runs on every reusable
//! response.
//!
//! Input: UTF-8 text (invalid bytes replaced by U+FFFD), one operation per line: the first
//! character picks it (`s` set, `i` set_if_absent, `r` remove, anything else append; `a` is
//! dropped), the rest is `name:value` (split at the first `:`; no `:` means an empty value).
//!
//! Oracles (besides "no panic"):
//! 1. After every operation the map's `iter()`, `len()` and `is_empty()` equal the model's.
//! 2. For every name of the model, its upper- and lower-case spellings, each prefix and suffix
//!    of it, each operation's name and a few fixed names: `get`, `get_all` and `contains` equal
//!    a naive case-insensitive scan over `iter()`.
//! 3. `keep_alive` never panics; a `timeout` it reports is at least 1; when no `Keep-Alive`
//!    value holds `"`, its `(timeout, max)` equal a naive parse: elements split at `,` and `;`,
//!    `name=value` trimmed of spaces and tabs, the value digits only (saturating at
//!    `u64::MAX`), `timeout=0` ignored, the smallest of several counting.
#![no_main]

use kdnet::network::http::__fuzz::keep_alive;
use kdnet::network::http::HeaderMap;
use libfuzzer_sys::fuzz_target;

type Model = Vec<(String, String)>;

fn naive_get_all<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    map.iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

fn check_lookup(map: &HeaderMap, name: &str) {
    let naive = naive_get_all(map, name);
    assert_eq!(
        map.get_all(name).collect::<Vec<_>>(),
        naive,
        "get_all({name:?})"
    );
    assert_eq!(map.get(name), naive.first().copied(), "get({name:?})");
    assert_eq!(map.contains(name), !naive.is_empty(), "contains({name:?})");
}

fn check_model(map: &HeaderMap, model: &Model) {
    let pairs: Vec<(&str, &str)> = map.iter().collect();
    let expected: Vec<(&str, &str)> = model.iter().map(|(n, v)| (&**n, &**v)).collect();
    assert_eq!(pairs, expected, "iter() vs model");
    assert_eq!(map.len(), model.len());
    assert_eq!(map.is_empty(), model.is_empty());
}

fn naive_keep_alive(model: &Model) -> (Option<u64>, Option<u64>) {
    let (mut timeout, mut max) = (None::<u64>, None::<u64>);
    let values = model
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("keep-alive"))
        .map(|(_, v)| v);
    for value in values {
        for element in value.split([',', ';']) {
            let Some((name, number)) = element.split_once('=') else {
                continue;
            };
            let number = number.trim_matches([' ', '\t']);
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let number = number
                .parse::<u128>()
                .map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(u64::MAX));
            let name = name.trim_matches([' ', '\t']).to_ascii_lowercase();
            let slot = match name.as_str() {
                "timeout" if number > 0 => &mut timeout,
                "max" => &mut max,
                _ => continue,
            };
            *slot = Some(slot.map_or(number, |before: u64| before.min(number)));
        }
    }
    (timeout, max)
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut map = HeaderMap::new();
    let mut model: Model = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let mut chars = line.chars();
        let op = chars.next().unwrap_or('a');
        let rest = if matches!(op, 'a' | 's' | 'i' | 'r') {
            chars.as_str()
        } else {
            line
        };
        let (name, value) = rest.split_once(':').unwrap_or((rest, ""));
        let has = |model: &Model| model.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        match op {
            's' => {
                map.set(name, value);
                model.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                model.push((name.to_owned(), value.to_owned()));
            }
            'i' => {
                let absent = !has(&model);
                assert_eq!(
                    map.set_if_absent(name, value),
                    absent,
                    "set_if_absent({name:?})"
                );
                if absent {
                    model.push((name.to_owned(), value.to_owned()));
                }
            }
            'r' => {
                let present = has(&model);
                assert_eq!(map.remove(name), present, "remove({name:?})");
                model.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            }
            _ => {
                map.append(name, value);
                model.push((name.to_owned(), value.to_owned()));
            }
        }
        check_model(&map, &model);
        names.push(name.to_owned());
    }

    // 2.
    names.extend(model.iter().map(|(n, _)| n.clone()));
    names.extend(["", "keep-alive", "content-length", "x"].map(String::from));
    names.sort_unstable();
    names.dedup();
    for name in &names {
        check_lookup(&map, name);
        check_lookup(&map, &name.to_ascii_uppercase());
        check_lookup(&map, &name.to_ascii_lowercase());
        // Prefixes and suffixes (same bytes, other lengths) of the shorter names.
        for (i, _) in name.char_indices().skip(1).take_while(|_| name.len() <= 64) {
            check_lookup(&map, &name[..i]);
            check_lookup(&map, &name[i..]);
        }
    }

    // 3.
    let (timeout, max) = keep_alive(&map);
    assert!(timeout != Some(0), "timeout=0 reported");
    let quoted = model
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("keep-alive") && v.contains('"'));
    if !quoted {
        assert_eq!(
            (timeout, max),
            naive_keep_alive(&model),
            "keep_alive vs naive"
        );
    }
});
