//! The request-key hash for consistent hashing, and the 64-bit mixer that the
//! balancers use to derive ring points and to spread raw keys.
//!
//! The hash must be the same in every process and every release, or a fleet
//! of sidecars would disagree on where a key lives (and a restart would move
//! every key). So it is written here with fixed constants instead of taken
//! from `std` (whose `DefaultHasher` is randomly seeded and documented as
//! unstable across releases). It reads eight bytes per step and folds them in
//! with a 64×64→128-bit multiply, then finishes with murmur3's `fmix64`, which
//! is enough for keys of a few dozen bytes (addresses, header values, cookies)
//! to land uniformly on the ring.

/// Odd constants with well-spread bits (the fractional parts of π), fixed
/// forever: changing one changes where every key maps.
const SEED: u64 = 0x243f_6a88_85a3_08d3;
const K0: u64 = 0x1319_8a2e_0370_7344;
const K1: u64 = 0xa409_3822_299f_31d0;

/// Hashes a request key (remote address, header, cookie, query argument, or a
/// combination) into the `u64` that [`PickCtx::hash`](super::PickCtx::hash)
/// carries.
///
/// Stable across processes, machines and releases: the same bytes give the
/// same value everywhere, so every sidecar maps a key to the same endpoint.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = SEED ^ (bytes.len() as u64).wrapping_mul(K0);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold_mul(h ^ u64::from_le_bytes(word), K1);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        h = fold_mul(h ^ u64::from_le_bytes(word), K0);
    }
    mix64(h)
}

/// Murmur3's 64-bit finaliser: a bijection in which every input bit affects
/// every output bit. Cheap enough to apply to a hash the proxy already mixed.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Multiplies into 128 bits and folds the halves together.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: if this test fails, the hash changed and every
    /// deployed sidecar would map keys differently from the new one.
    #[test]
    fn stable_across_releases() {
        assert_eq!(hash_key(b""), 0x7acd_bb98_b134_4213);
        assert_eq!(hash_key(b"10.0.0.1"), 0xa7f2_992a_2ea5_2c32);
        assert_eq!(hash_key(b"user-session-0123456789"), 0x5419_1761_687c_384c);
    }

    #[test]
    fn length_and_tail_matter() {
        assert_ne!(hash_key(b""), hash_key(b"\0"));
        assert_ne!(hash_key(b"\0"), hash_key(b"\0\0"));
        assert_ne!(hash_key(b"abcdefgh"), hash_key(b"abcdefgh\0"));
        assert_ne!(hash_key(b"abcdefghi"), hash_key(b"abcdefghj"));
    }

    /// Flipping one input bit flips about half of the output bits.
    #[test]
    fn avalanche() {
        let base = b"192.168.100.200:54321".to_vec();
        let h0 = hash_key(&base);
        let mut total = 0u32;
        let mut n = 0u32;
        for byte in 0..base.len() {
            for bit in 0..8 {
                let mut k = base.clone();
                k[byte] ^= 1 << bit;
                let flipped = (hash_key(&k) ^ h0).count_ones();
                assert!(
                    (12..=52).contains(&flipped),
                    "byte {byte} bit {bit}: {flipped}"
                );
                total += flipped;
                n += 1;
            }
        }
        let mean = f64::from(total) / f64::from(n);
        assert!((28.0..=36.0).contains(&mean), "mean flipped bits {mean}");
    }
}
