//! 64-bit perceptual hashes (average, difference, DCT), following the
//! definitions of the Python `imagehash` package: the image is reduced to
//! grey at a small size (Lanczos3), then one bit per cell, most
//! significant bit first, row by row.

use crate::MediaError;
use crate::pixels::{ColorMode, Pixels, ResizeFilter, convert, resize};

/// Which hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// Average hash: 8×8 grey, bit = pixel above the mean.
    Average,
    /// Difference hash: 9×8 grey, bit = the right-hand neighbour is
    /// brighter (as imagehash defines it).
    Difference,
    /// Perceptual hash: 32×32 grey, 2-D DCT-II, the 8×8 lowest
    /// frequencies, bit = above their median.
    Perceptual,
}

impl HashKind {
    /// The smallest decode size the hash needs (for DCT-scaled decoding).
    pub fn work_size(self) -> (u32, u32) {
        match self {
            Self::Average => (8, 8),
            Self::Difference => (9, 8),
            Self::Perceptual => (32, 32),
        }
    }
}

fn grey(pixels: &Pixels, w: u32, h: u32) -> Result<Vec<f64>, MediaError> {
    let g = convert(pixels, ColorMode::L);
    let small = resize(&g, i64::from(w), i64::from(h), ResizeFilter::Lanczos3)?;
    Ok(small.data.iter().map(|&v| f64::from(v)).collect())
}

fn bits(values: impl Iterator<Item = bool>) -> u64 {
    values.fold(0u64, |acc, b| (acc << 1) | u64::from(b))
}

/// The hash of a decoded image.
pub fn image_hash(pixels: &Pixels, kind: HashKind) -> Result<u64, MediaError> {
    match kind {
        HashKind::Average => {
            let g = grey(pixels, 8, 8)?;
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            Ok(bits(g.iter().map(|&v| v > mean)))
        }
        HashKind::Difference => {
            let g = grey(pixels, 9, 8)?;
            Ok(bits(
                (0..8)
                    .flat_map(|y| (0..8).map(move |x| (y, x)))
                    .map(|(y, x)| g[y * 9 + x + 1] > g[y * 9 + x]),
            ))
        }
        HashKind::Perceptual => {
            let g = grey(pixels, 32, 32)?;
            let low = dct_low_8x8(&g);
            let mut sorted = low.to_vec();
            sorted.sort_by(f64::total_cmp);
            let median = (sorted[31] + sorted[32]) / 2.0;
            Ok(bits(low.iter().map(|&v| v > median)))
        }
    }
}

/// The top-left 8×8 of the orthogonal-free (scipy `norm=None`) 2-D DCT-II
/// of a 32×32 block; scaling does not change which side of the median a
/// coefficient falls.
fn dct_low_8x8(block: &[f64]) -> [f64; 64] {
    const N: usize = 32;
    let mut cos = [[0f64; N]; 8];
    for (k, row) in cos.iter_mut().enumerate() {
        for (n, c) in row.iter_mut().enumerate() {
            *c = (std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2 * N) as f64).cos();
        }
    }
    // Rows first (only the 8 lowest frequencies are needed), then columns.
    let mut rows = vec![[0f64; 8]; N];
    for (y, out) in rows.iter_mut().enumerate() {
        for (k, o) in out.iter_mut().enumerate() {
            *o = 2.0 * (0..N).map(|x| block[y * N + x] * cos[k][x]).sum::<f64>();
        }
    }
    let mut out = [0f64; 64];
    for ky in 0..8 {
        for kx in 0..8 {
            out[ky * 8 + kx] = 2.0 * (0..N).map(|y| rows[y][kx] * cos[ky][y]).sum::<f64>();
        }
    }
    out
}

/// Bits that differ between two hashes.
pub fn hamming_distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::{DecodeLimits, EncodeFormat, decode, encode};

    /// A 7×5 grid of cells of pseudo-random brightness; `seed` picks them.
    fn scene(w: u32, h: u32, seed: u64) -> Pixels {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let cells: Vec<u8> = (0..35)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect();
        let mut data = vec![];
        for y in 0..h {
            for x in 0..w {
                let a = cells[(y * 5 / h * 7 + x * 7 / w) as usize];
                data.extend_from_slice(&[a, a / 2 + 40, 255 - a]);
            }
        }
        Pixels {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn near_duplicates_are_near_and_others_far() {
        let a = scene(320, 240, 1);
        let a_small = resize(&a, 160, 120, ResizeFilter::Bilinear).unwrap();
        let a_jpeg = decode(
            &encode(&a, EncodeFormat::Jpeg, Some(60)).unwrap(),
            &DecodeLimits::default(),
            None,
        )
        .unwrap();
        let b = scene(320, 240, 2);
        for kind in [
            HashKind::Average,
            HashKind::Difference,
            HashKind::Perceptual,
        ] {
            let h = image_hash(&a, kind).unwrap();
            let near1 = hamming_distance(h, image_hash(&a_small, kind).unwrap());
            let near2 = hamming_distance(h, image_hash(&a_jpeg, kind).unwrap());
            let far = hamming_distance(h, image_hash(&b, kind).unwrap());
            assert!(near1 <= 6 && near2 <= 6, "{kind:?}: {near1} {near2}");
            assert!(far >= 10, "{kind:?}: far {far}");
        }
    }

    #[test]
    fn hamming() {
        assert_eq!(hamming_distance(0, u64::MAX), 64);
        assert_eq!(hamming_distance(0b1011, 0b0001), 2);
    }
}
