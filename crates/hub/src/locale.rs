//! The language of user-facing text: Traditional Chinese by default, as in the original
//! product, or English (`--locale en`).

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    ZhTw,
    En,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown locale {0:?}: use zh-TW or en")]
pub struct UnknownLocale(String);

impl FromStr for Locale {
    type Err = UnknownLocale;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "zh-tw" | "zh_tw" | "zh" => Ok(Self::ZhTw),
            "en" | "en-us" | "en_us" => Ok(Self::En),
            _ => Err(UnknownLocale(s.to_string())),
        }
    }
}

impl std::fmt::Display for Locale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.pick("zh-TW", "en"))
    }
}

impl Locale {
    /// Picks the text for this locale.
    pub fn pick<'a>(self, zh_tw: &'a str, en: &'a str) -> &'a str {
        match self {
            Self::ZhTw => zh_tw,
            Self::En => en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_picks() {
        assert_eq!("zh-TW".parse(), Ok(Locale::ZhTw));
        assert_eq!("en".parse(), Ok(Locale::En));
        assert!("fr".parse::<Locale>().is_err());
        assert_eq!(Locale::default().pick("中", "en"), "中");
        assert_eq!(Locale::En.pick("中", "en"), "en");
    }
}
