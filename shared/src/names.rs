//! Enums with a fixed text form (configuration values, column values): one macro gives each
//! its `as_str`, `FromStr` and `Display`, so no mapping is written out twice.

use std::fmt;

/// A text that is none of an enum's names (its `Display` lists the accepted ones; callers
/// add the text itself where it helps).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownName {
    /// What was given.
    pub got: String,
    /// The accepted names.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.expected.join(" or "))
    }
}

/// Declares a fieldless enum whose variants have a fixed text form.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text form.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    other => Err($crate::names::UnknownName { got: other.to_owned(), expected: &[$($text),+] }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    text_enum! {
        enum Color {
            Red = "red",
            Blue = "blue",
        }
    }

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for color in Color::ALL {
            assert_eq!(color.as_str().parse::<Color>(), Ok(*color));
        }
        let err = "green".parse::<Color>().map_err(|e| e.to_string());
        assert_eq!(err, Err("expected red or blue".to_owned()));
    }
}
