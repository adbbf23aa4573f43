//! What may be logged of input a peer controls: values cut to a bounded length with
//! their full length shown ([`Clip`]), and warnings a peer can repeat at will let
//! through at a bounded rate with a count of what was held back ([`RateLimit`]).
//!
//! A request's content is never logged verbatim: a peer that sends a 1 MiB error
//! detail or a 4 MB resource name must cost the log one short line, and one that
//! repeats a warning 20,000 times a second must cost it a few lines per interval. It
//! does not own what is logged where (the callers) or log output (tracing).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest piece of peer-controlled text a log line carries by default, in bytes.
pub const DEFAULT_CLIP: usize = 200;

/// `text` for a log line: at most `max` bytes of it (cut at a character boundary, with
/// control characters escaped) followed by `… (N bytes)` when it was longer.
#[derive(Clone, Copy)]
pub struct Clip<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Clip<'a> {
    /// At most [`DEFAULT_CLIP`] bytes of `text`.
    pub fn new(text: &'a str) -> Self {
        Self::with_max(text, DEFAULT_CLIP)
    }

    /// At most `max` bytes of `text`.
    pub fn with_max(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut end = self.text.len().min(self.max);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        for c in self.text[..end].chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        if end < self.text.len() {
            write!(f, "… ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A list of peer-controlled names for a log line: the first few, each clipped, and
/// how many there were in all.
pub struct ClipList<'a, T> {
    items: &'a [T],
}

impl<'a, T: AsRef<str>> ClipList<'a, T> {
    /// The names to show.
    pub fn new(items: &'a [T]) -> Self {
        Self { items }
    }
}

/// How many list items a log line shows.
const LIST_ITEMS: usize = 5;
/// How many bytes of each list item a log line shows.
const LIST_ITEM_CLIP: usize = 80;

impl<T: AsRef<str>> fmt::Display for ClipList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.items.iter().take(LIST_ITEMS).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Clip::with_max(item.as_ref(), LIST_ITEM_CLIP))?;
        }
        if self.items.len() > LIST_ITEMS {
            write!(f, ", … {} in all", self.items.len())?;
        }
        f.write_str("]")
    }
}

/// Lets at most `burst` events through per `interval`; counts the rest so that the
/// next event let through can say how many were held back. Shared by every task that
/// logs the same kind of warning (a std mutex held for a few instructions).
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

impl RateLimit {
    /// At most `burst` events per `interval`.
    pub const fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            state: Mutex::new(Window {
                start: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log an event happening at `now`: `Some(n)` if so, `n` being the
    /// number of events held back since the last one logged; `None` to hold it back.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            window.start = Some(now);
            window.passed = 0;
        }
        if window.passed < self.burst {
            window.passed += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_cut_with_its_length() {
        assert_eq!(Clip::new("bad CA").to_string(), "bad CA");
        let long = "x".repeat(1 << 20);
        let shown = Clip::new(&long).to_string();
        assert_eq!(
            shown,
            format!("{}… (1048576 bytes)", "x".repeat(DEFAULT_CLIP))
        );
    }

    #[test]
    fn cuts_at_a_character_boundary_and_escapes_control_characters() {
        let text = "é".repeat(10);
        assert_eq!(Clip::with_max(&text, 3).to_string(), "é… (20 bytes)");
        assert_eq!(
            Clip::new("a\nb\u{1b}[31m").to_string(),
            "a\\nb\\u{1b}[31m",
            "no forged log lines or terminal escapes"
        );
    }

    #[test]
    fn lists_show_the_first_few_items_and_the_count() {
        let names: Vec<String> = (0..1000).map(|i| format!("spiffe://{i}.test")).collect();
        let shown = ClipList::new(&names).to_string();
        assert_eq!(
            shown,
            "[spiffe://0.test, spiffe://1.test, spiffe://2.test, spiffe://3.test, spiffe://4.test, … 1000 in all]"
        );
        let huge = vec!["n".repeat(4_000_000)];
        assert!(ClipList::new(&huge).to_string().len() < 120);
    }

    #[test]
    fn rate_limit_lets_a_burst_through_then_counts_what_it_holds_back() {
        let limit = RateLimit::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let passed: Vec<Option<u64>> = (0..20_000).map(|_| limit.check(t0)).collect();
        assert_eq!(passed.iter().filter(|p| p.is_some()).count(), 3);
        assert_eq!(passed[0], Some(0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limit.check(later), Some(19_997), "the held-back count");
        assert_eq!(limit.check(later), Some(0));
    }
}
