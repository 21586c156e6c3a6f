//! The `Date` header: RFC 9110's IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted at most once a
//! second per thread, since every response carries it.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An IMF-fixdate is always this long.
pub const LEN: usize = 29;

thread_local! {
    /// The second last formatted on this thread, and its text.
    static CACHE: Cell<(u64, [u8; LEN])> = const { Cell::new((u64::MAX, [0; LEN])) };
}

/// Now, as an IMF-fixdate.
pub fn now() -> [u8; LEN] {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let (cached_secs, text) = cache.get();
        if cached_secs == secs {
            return text;
        }
        let text = format(secs);
        cache.set((secs, text));
        text
    })
}

/// Formats seconds since the Unix epoch (UTC) as an IMF-fixdate.
pub fn format(secs: u64) -> [u8; LEN] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    let text = std::format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    );
    let mut out = [b' '; LEN];
    // Years past 9999 would not fit; they are not a concern for a clock that reads today's date.
    let n = text.len().min(LEN);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01: Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
