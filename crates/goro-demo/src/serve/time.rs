//! UTC calendar dates for the `Date` header field and log timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, broken down into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Utc {
    year: i64,
    /// 1 to 12.
    month: u32,
    /// 1 to 31.
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millisecond: u32,
    /// 0 is Sunday.
    weekday: u32,
}

impl Utc {
    /// Converts `time`; times before 1970 count as 1970-01-01T00:00:00Z.
    fn from_system_time(time: SystemTime) -> Utc {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_epoch.as_secs();
        let days = (seconds / 86_400) as i64;
        let second_of_day = (seconds % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: second_of_day / 3600,
            minute: second_of_day / 60 % 60,
            second: second_of_day % 60,
            millisecond: since_epoch.subsec_millis(),
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u32,
        }
    }
}

/// Returns the proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// This is the `civil_from_days` algorithm of Howard Hinnant's "chrono-Compatible Low-Level
/// Date Algorithms": it shifts the year to start on March 1 so that the leap day comes last,
/// then splits the days into 400-year eras of 146,097 days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats `time` as an HTTP date (IMF-fixdate, RFC 9110 section 5.6.7):
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(time: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let utc = Utc::from_system_time(time);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[utc.weekday as usize],
        utc.day,
        MONTHS[utc.month as usize - 1],
        utc.year,
        utc.hour,
        utc.minute,
        utc.second
    )
}

/// Formats `time` as an RFC 3339 UTC timestamp with milliseconds:
/// `1994-11-06T08:49:37.000Z`.
pub fn log_timestamp(time: SystemTime) -> String {
    let utc = Utc::from_system_time(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.millisecond
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    #[test]
    fn http_date_examples() {
        // The example of RFC 9110 section 5.6.7.
        assert_eq!(
            http_date(at(784_111_777, 0)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(http_date(at(0, 0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        // 2000 was a leap year, as every 400th year is.
        assert_eq!(
            http_date(at(951_782_400, 0)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(at(4_133_980_799, 0)),
            "Fri, 31 Dec 2100 23:59:59 GMT"
        );
    }

    #[test]
    fn log_timestamp_examples() {
        assert_eq!(
            log_timestamp(at(784_111_777, 42)),
            "1994-11-06T08:49:37.042Z"
        );
        assert_eq!(
            log_timestamp(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn civil_dates_advance_one_day_at_a_time() {
        // Every day from 1970 to 2400 follows the one before it in the calendar.
        let days_in_month = |year: i64, month: u32| match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (year, month, day) = expected;
            expected = if day < days_in_month(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
    }
}
