//! PNG captchas of 4 characters, drawn without the ambiguous ones (0/O/o, 1/I/l/i/j...).

use captcha::{
    Captcha,
    filters::{Dots, Noise, Wave},
};

/// Characters a captcha may contain: easy to tell apart, compared case-insensitively.
pub const ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnpqrtuvwxyz";

/// Number of characters in a captcha.
pub const LENGTH: u32 = 4;

/// A generated captcha: its text and the PNG showing it.
pub struct Generated {
    /// The characters to type.
    pub text: String,
    /// The image.
    pub png: Vec<u8>,
}

/// Draws a captcha. CPU-bound (a few milliseconds): call it from `spawn_blocking`.
pub fn generate() -> Option<Generated> {
    let mut captcha = Captcha::new();
    let usable: Vec<char> = captcha.supported_chars().into_iter().filter(|c| ALPHABET.contains(*c)).collect();
    captcha
        .set_chars(&usable)
        .add_chars(LENGTH)
        .apply_filter(Noise::new(0.1))
        .apply_filter(Wave::new(2.0, 8.0))
        .view(180, 70)
        .apply_filter(Dots::new(4));
    let (text, png) = captcha.as_tuple()?;
    (text.chars().count() == LENGTH as usize).then_some(Generated { text, png })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captchas_use_four_unambiguous_characters() {
        for _ in 0..20 {
            let Some(g) = generate() else { panic!("captcha generation failed") };
            assert_eq!(g.text.chars().count(), 4);
            assert!(g.text.chars().all(|c| ALPHABET.contains(c)), "{}", g.text);
            assert!(g.png.starts_with(b"\x89PNG\r\n\x1a\n"));
        }
    }
}
