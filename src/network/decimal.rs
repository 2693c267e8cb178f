//! Decimal digits of an integer without allocating (a `Content-Length`, a port, an SSE `retry`).

/// The most digits a `u64` has in decimal.
pub(crate) const MAX_DECIMAL_LEN: usize = 20;

/// `n` in decimal, written into the end of `digits`.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; MAX_DECIMAL_LEN]) -> &str {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&digits[start..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits() {
        let mut digits = [0; MAX_DECIMAL_LEN];
        for n in [0, 7, 10, 99, 100, 65_535, 1 << 40, u64::MAX] {
            assert_eq!(decimal(n, &mut digits), n.to_string());
        }
    }
}
