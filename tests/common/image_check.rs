//! Comparing images: what "matches" means in the tests.

use image::RgbImage;

/// Peak signal-to-noise ratio of `b` against `a` over all RGB samples, in dB
/// (infinite for identical images).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "PSNR of images of different sizes"
    );
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = sum / a.as_raw().len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Mean RGB of the `size`x`size` square centred on (cx, cy).
pub fn mean_rgb(img: &RgbImage, cx: u32, cy: u32, size: u32) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for y in cy - size / 2..cy + size / 2 {
        for x in cx - size / 2..cx + size / 2 {
            let p = img.get_pixel(x, y).0;
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
        }
    }
    sum.map(|s| s / f64::from(size * size))
}

/// Decodes any PNG, PPM or JPEG with the `image` crate: an independent decoder.
pub fn decode_rgb(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes)
        .expect("decodable image")
        .to_rgb8()
}

/// Share of pixels that are the wake fixture's banner blue (fbcon's 0,0,170).
pub fn blue_share(img: &RgbImage) -> f64 {
    let blue = img
        .pixels()
        .filter(|p| p[2] > 120 && p[0] < 80 && p[1] < 80)
        .count();
    blue as f64 / f64::from(img.width() * img.height())
}

/// Share of pixels that are not black.
pub fn lit_share(img: &RgbImage) -> f64 {
    let lit = img.pixels().filter(|p| p.0.iter().any(|c| *c > 24)).count();
    lit as f64 / f64::from(img.width() * img.height())
}

/// Share of pixels that are strongly red (the events guest's panic notice).
pub fn red_share(img: &RgbImage) -> f64 {
    let red = img
        .pixels()
        .filter(|p| p[0] > 120 && p[1] < 80 && p[2] < 80)
        .count();
    red as f64 / f64::from(img.width() * img.height())
}
