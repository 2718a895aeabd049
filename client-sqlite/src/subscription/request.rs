//! One shape request: its URL, and what its status and headers mean.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode, Url};
use shapes::handle::Handle;

use crate::error::ClientError;
use crate::shape_spec::ShapeSpec;

/// How the next request waits for news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Catch-up: answer at once.
    CatchUp,
    LongPoll,
    Sse,
}

/// `GET /v1/shape?…` for the shape at `offset`.
pub fn shape_url(
    base: &Url,
    spec: &ShapeSpec,
    offset: &str,
    handle: Option<&Handle>,
    mode: Mode,
    cursor: Option<&str>,
) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}/v1/shape", base.path().trim_end_matches('/')));
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in spec.query_pairs() {
            q.append_pair(&k, &v);
        }
        q.append_pair("offset", offset);
        if let Some(handle) = handle.filter(|_| offset != "-1") {
            q.append_pair("handle", handle.as_str());
        }
        if mode != Mode::CatchUp {
            q.append_pair("live", "true");
            q.append_pair("cursor", cursor.unwrap_or(""));
        }
        if mode == Mode::Sse {
            q.append_pair("live_sse", "true");
        }
    }
    url
}

/// What a non-2xx answer means.
pub enum Refusal {
    /// 409 / must-refetch: start again from scratch.
    MustRefetch,
    Error(ClientError),
}

/// Splits a response into success or a [`Refusal`], reading the body of errors.
pub async fn check(response: Response) -> Result<Response, Refusal> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::CONFLICT {
        return Err(Refusal::MustRefetch);
    }
    let retry_after = header(response.headers(), "retry-after")
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let message = response.text().await.unwrap_or_default();
    let message: String = message.chars().take(500).collect();
    let code = status.as_u16();
    Err(Refusal::Error(
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            ClientError::Unavailable {
                status: code,
                message,
                retry_after,
            }
        } else {
            ClientError::Refused {
                status: code,
                message,
            }
        },
    ))
}

/// `retry-after` as seconds or as an HTTP date (RFC 9110 §10.2.3: IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms every recipient must accept), as a wait from `now`. A date in the
/// past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value)
        .map(|d| d.to_utc())
        .or_else(|_| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|format| chrono::NaiveDateTime::parse_from_str(value, format).ok())
                .map(|naive| naive.and_utc())
                .ok_or(())
        })
        .ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header the protocol requires.
pub fn required<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, ClientError> {
    header(headers, name)
        .ok_or_else(|| ClientError::Protocol(format!("the response has no {name} header")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_definition_offset_handle_and_live_flags() {
        let base: Url = "http://h:1/prefix/".parse().unwrap();
        let spec = ShapeSpec::table("todos").with_where("done = false");
        let h1: Handle = "h1".parse().unwrap();
        let url = shape_url(&base, &spec, "-1", Some(&h1), Mode::CatchUp, None);
        assert_eq!(
            url.as_str(),
            "http://h:1/prefix/v1/shape?table=todos&where=done+%3D+false&offset=-1"
        );
        let url = shape_url(&base, &spec, "5_2", Some(&h1), Mode::Sse, Some("20"));
        assert!(
            url.as_str()
                .ends_with("offset=5_2&handle=h1&live=true&cursor=20&live_sse=true")
        );
    }

    /// 2015-10-21 07:27:30 GMT.
    const OCT_21_2015: u64 = 1_445_412_450;
    /// 1994-11-06 08:49:07 GMT.
    const NOV_6_1994: u64 = 784_111_747;

    #[rstest::rstest]
    #[case::seconds("120", OCT_21_2015, Some(Duration::from_secs(120)))]
    #[case::zero_seconds_with_spaces(" 0 ", OCT_21_2015, Some(Duration::ZERO))]
    #[case::imf_fixdate(
        "Wed, 21 Oct 2015 07:28:00 GMT",
        OCT_21_2015,
        Some(Duration::from_secs(30))
    )]
    #[case::rfc850_date(
        "Wednesday, 21-Oct-15 07:28:00 GMT",
        OCT_21_2015,
        Some(Duration::from_secs(30))
    )]
    #[case::asctime_date("Wed Oct 21 07:28:00 2015", OCT_21_2015, Some(Duration::from_secs(30)))]
    // a date in the past: retry now
    #[case::date_in_the_past("Wed, 21 Oct 2015 07:00:00 GMT", OCT_21_2015, Some(Duration::ZERO))]
    // asctime pads the day with a space
    #[case::asctime_padded_day(
        "Sun Nov  6 08:49:37 1994",
        NOV_6_1994,
        Some(Duration::from_secs(30))
    )]
    #[case::words("soon", OCT_21_2015, None)]
    #[case::negative_seconds("-5", OCT_21_2015, None)]
    fn retry_after_is_read_as_seconds_or_as_an_http_date(
        #[case] value: &str,
        #[case] now_secs: u64,
        #[case] wait: Option<Duration>,
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        assert_eq!(parse_retry_after(value, now), wait, "{value}");
    }
}
