//! Reads an integer straight from a `numeric`'s stored form (the on-disk format, which every
//! PostgreSQL version shares), for the integer columns of a jsonb row: the same value that the
//! column's input function would read from `numeric_out`'s text, without printing and parsing.
//! Pure, unit-tested with plain `#[test]`s; whatever it declines goes the input function's way.

/// The header bits, as `numeric.c` defines them.
const SIGN_MASK: u16 = 0xC000;
const NEG: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const SHORT_SIGN_MASK: u16 = 0x2000;
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;
const DSCALE_MASK: u16 = 0x3FFF;
/// Each digit holds four decimal digits.
const NBASE: i128 = 10_000;

/// The value of a numeric whose bytes after the varlena header are `data`, if it is an integer
/// as `numeric_out` prints it: no digits after the point (a display scale of 0: `1.0` prints as
/// "1.0", which `int4in` refuses), within `min..=max`. None for anything else, NaN and the
/// infinities included, and for a malformed header.
pub fn integer(data: &[u8], min: i64, max: i64) -> Option<i64> {
    let header = u16::from_ne_bytes([*data.first()?, *data.get(1)?]);
    let (negative, dscale, weight, digits) = match header & SIGN_MASK {
        SPECIAL => return None,
        flags if flags & SHORT != 0 => {
            let w = header & SHORT_WEIGHT_MASK;
            let weight = if header & SHORT_WEIGHT_SIGN_MASK != 0 { (w | !SHORT_WEIGHT_MASK) as i16 } else { w as i16 };
            (header & SHORT_SIGN_MASK != 0, (header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT, weight, &data[2..])
        }
        flags => {
            let weight = i16::from_ne_bytes([*data.get(2)?, *data.get(3)?]);
            (flags == NEG, header & DSCALE_MASK, weight, &data[4..])
        }
    };
    if dscale != 0 || digits.len() % 2 != 0 {
        return None;
    }
    let mut value: i128 = 0;
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let digit = i16::from_ne_bytes([pair[0], pair[1]]) as i128;
        if !(0..NBASE).contains(&digit) {
            return None;
        }
        let place = weight as i64 - i as i64; // this digit's power of NBASE
        if place < 0 {
            if digit != 0 {
                return None; // a fraction: never with a display scale of 0, but not ours to judge
            }
            continue;
        }
        if place > 5 {
            return None; // at least 10^20: beyond any integer type
        }
        value += digit * NBASE.pow(place as u32);
    }
    let value = if negative { -value } else { value };
    (min as i128..=max as i128).contains(&value).then_some(value as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short-format numeric: sign, display scale, weight, digits.
    fn short(negative: bool, dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let w = (weight as u16) & (SHORT_WEIGHT_MASK | SHORT_WEIGHT_SIGN_MASK);
        let header = SHORT | if negative { SHORT_SIGN_MASK } else { 0 } | (dscale << SHORT_DSCALE_SHIFT) | w;
        let mut out = header.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| out.extend(d.to_ne_bytes()));
        out
    }

    /// A long-format numeric, as numeric_in writes large weights or scales.
    fn long(negative: bool, dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let mut out = ((if negative { NEG } else { 0 }) | dscale).to_ne_bytes().to_vec();
        out.extend(weight.to_ne_bytes());
        digits.iter().for_each(|d| out.extend(d.to_ne_bytes()));
        out
    }

    const I64: (i64, i64) = (i64::MIN, i64::MAX);

    #[test]
    fn integers_read_as_numeric_out_prints_them() {
        assert_eq!(integer(&short(false, 0, 0, &[]), I64.0, I64.1), Some(0));
        assert_eq!(integer(&short(false, 0, 0, &[42]), I64.0, I64.1), Some(42));
        assert_eq!(integer(&short(true, 0, 1, &[1234, 5678]), I64.0, I64.1), Some(-12_345_678));
        // trailing zero digits are not stored: 10^8 is one digit of weight 2
        assert_eq!(integer(&short(false, 0, 2, &[1]), I64.0, I64.1), Some(100_000_000));
        assert_eq!(integer(&long(false, 0, 4, &[922, 3372, 368, 5477, 5807]), I64.0, I64.1), Some(i64::MAX));
        assert_eq!(integer(&long(true, 0, 4, &[922, 3372, 368, 5477, 5808]), I64.0, I64.1), Some(i64::MIN));
    }

    #[test]
    fn out_of_range_fractions_and_specials_are_declined() {
        assert_eq!(integer(&long(false, 0, 4, &[922, 3372, 368, 5477, 5808]), I64.0, I64.1), None);
        assert_eq!(integer(&short(false, 0, 2, &[21, 4748, 3648]), i32::MIN as i64, i32::MAX as i64), None);
        assert_eq!(integer(&short(true, 0, 2, &[21, 4748, 3648]), i32::MIN as i64, i32::MAX as i64), Some(i32::MIN as i64));
        assert_eq!(integer(&short(false, 0, 1, &[3, 2768]), i16::MIN as i64, i16::MAX as i64), None);
        // 1.0: a display scale of 1, which int4in refuses as text
        assert_eq!(integer(&short(false, 1, 0, &[1]), I64.0, I64.1), None);
        // 0.5
        assert_eq!(integer(&short(false, 0, -1, &[5000]), I64.0, I64.1), None);
        // 10^24
        assert_eq!(integer(&long(false, 0, 6, &[1]), I64.0, I64.1), None);
        // NaN
        assert_eq!(integer(&SPECIAL.to_ne_bytes(), I64.0, I64.1), None);
        assert_eq!(integer(&[], I64.0, I64.1), None);
        assert_eq!(integer(&short(false, 0, 0, &[10_000]), I64.0, I64.1), None);
    }
}
