//! [`classify`] and [`classify_device_authorization`] against real Entra ID and Google bodies,
//! throttling and garbage answers; `Retry-After` forms.

use super::*;

const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// Real Entra ID error bodies (shape as returned by login.microsoftonline.com, ids shortened).
const AADSTS70008: &str = r#"{"error":"invalid_grant","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource. Trace ID: 0b1c Correlation ID: 9f2e Timestamp: 2024-05-02 10:11:12Z","error_codes":[70008],"timestamp":"2024-05-02 10:11:12Z","trace_id":"0b1c","correlation_id":"9f2e","error_uri":"https://login.microsoftonline.com/error?code=70008"}"#;
const AADSTS50173: &str = r#"{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '2024-01-01T00:00:00Z' and the TokensValidFrom date (before which tokens are not valid) for this user is '2024-02-01T00:00:00Z'.\r\nTrace ID: a1\r\nCorrelation ID: b2\r\nTimestamp: 2024-05-02 10:11:12Z","error_codes":[50173],"timestamp":"2024-05-02 10:11:12Z","trace_id":"a1","correlation_id":"b2"}"#;
const AADSTS7000215: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '11111111-2222-3333-4444-555555555555'.\r\nTrace ID: c3\r\nCorrelation ID: d4\r\nTimestamp: 2024-05-02 10:11:12Z","error_codes":[7000215],"timestamp":"2024-05-02 10:11:12Z","trace_id":"c3","correlation_id":"d4","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#;
const CODE_ONLY_IN_DESCRIPTION: &str = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}"#;
const TEMPORARILY_UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred. Please try again.","error_codes":[90033]}"#;
const LOOP: &str = r#"{"error":"invalid_grant","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop.","error_codes":[50196]}"#;
const UNKNOWN_CODE: &str = r#"{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain the following parameter: 'grant_type'.","error_codes":[900144]}"#;
const SUCCESS: &str = r#"{"token_type":"Bearer","scope":"https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send","expires_in":4398,"ext_expires_in":4398,"access_token":"eyJ0eXAiOi.AT","refresh_token":"0.ARoA.RT","id_token":"eyJ.ID"}"#;

struct Case {
    name: &'static str,
    status: u16,
    retry_after: Option<&'static str>,
    body: &'static str,
    kind: ErrorKind,
    error: Option<&'static str>,
    aadsts: Option<u32>,
    message: &'static str,
    retry: Option<u64>,
}

#[test]
fn classification_table() {
    use ErrorKind::*;
    let cases = [
        Case {
            name: "refresh token expired",
            status: 400,
            retry_after: None,
            body: AADSTS70008,
            kind: Permanent,
            error: Some("invalid_grant"),
            aadsts: Some(70008),
            message: "AADSTS70008 refresh token expired",
            retry: None,
        },
        Case {
            name: "revoked",
            status: 400,
            retry_after: None,
            body: AADSTS50173,
            kind: Permanent,
            error: Some("invalid_grant"),
            aadsts: Some(50173),
            message: "AADSTS50173 refresh token revoked (password changed or sessions revoked)",
            retry: None,
        },
        Case {
            name: "bad client secret",
            status: 401,
            retry_after: None,
            body: AADSTS7000215,
            kind: Permanent,
            error: Some("invalid_client"),
            aadsts: Some(7000215),
            message: "AADSTS7000215 invalid client secret",
            retry: None,
        },
        Case {
            name: "code only in description",
            status: 400,
            retry_after: None,
            body: CODE_ONLY_IN_DESCRIPTION,
            kind: Permanent,
            error: Some("invalid_grant"),
            aadsts: Some(700082),
            message: "AADSTS700082 refresh token expired (unused for too long)",
            retry: None,
        },
        Case {
            name: "unknown AADSTS code",
            status: 400,
            retry_after: None,
            body: UNKNOWN_CODE,
            kind: Permanent,
            error: Some("invalid_request"),
            aadsts: Some(900144),
            message: "invalid_request (AADSTS900144)",
            retry: None,
        },
        Case {
            name: "plain RFC 6749 error",
            status: 400,
            retry_after: None,
            body: r#"{"error":"unauthorized_client"}"#,
            kind: Permanent,
            error: Some("unauthorized_client"),
            aadsts: None,
            message: "unauthorized_client",
            retry: None,
        },
        Case {
            name: "temporarily_unavailable",
            status: 400,
            retry_after: None,
            body: TEMPORARILY_UNAVAILABLE,
            kind: Transient,
            error: Some("temporarily_unavailable"),
            aadsts: Some(90033),
            message: "AADSTS90033 transient error at the identity provider",
            retry: None,
        },
        Case {
            name: "loop detected is transient",
            status: 400,
            retry_after: None,
            body: LOOP,
            kind: Transient,
            error: Some("invalid_grant"),
            aadsts: Some(50196),
            message: "AADSTS50196 request loop detected (too many identical token requests)",
            retry: None,
        },
        Case {
            name: "429 with delay-seconds",
            status: 429,
            retry_after: Some("30"),
            body: "",
            kind: Transient,
            error: None,
            aadsts: None,
            message: "throttled by the token endpoint (HTTP 429, retry after 30 s)",
            retry: Some(30),
        },
        Case {
            name: "429 with HTTP-date",
            status: 429,
            retry_after: Some("Tue, 14 Nov 2023 22:33:20 GMT"),
            body: r#"{"error":"temporarily_unavailable"}"#,
            kind: Transient,
            error: Some("temporarily_unavailable"),
            aadsts: None,
            message: "throttled by the token endpoint (HTTP 429, retry after 1200 s)",
            retry: Some(1200),
        },
        Case {
            name: "503 html",
            status: 503,
            retry_after: Some("5"),
            body: "<html><body>Service Unavailable</body></html>",
            kind: Transient,
            error: None,
            aadsts: None,
            message: "token endpoint error (HTTP 503)",
            retry: Some(5),
        },
        Case {
            name: "500 with oauth error",
            status: 500,
            retry_after: None,
            body: r#"{"error":"server_error","error_codes":[90033]}"#,
            kind: Transient,
            error: Some("server_error"),
            aadsts: Some(90033),
            message: "token endpoint error (HTTP 500): AADSTS90033 transient error at the identity provider",
            retry: None,
        },
        Case {
            name: "garbage 400",
            status: 400,
            retry_after: None,
            body: "\u{1}\u{2}garbage",
            kind: Transient,
            error: None,
            aadsts: None,
            message: "unreadable error response from the token endpoint (HTTP 400)",
            retry: None,
        },
        Case {
            name: "garbage 200",
            status: 200,
            retry_after: None,
            body: "<html>login</html>",
            kind: Transient,
            error: None,
            aadsts: None,
            message: "unreadable token response (HTTP 200): not a JSON object",
            retry: None,
        },
        Case {
            name: "200 without access_token",
            status: 200,
            retry_after: None,
            body: r#"{"token_type":"Bearer","expires_in":3600}"#,
            kind: Transient,
            error: None,
            aadsts: None,
            message: "unreadable token response (HTTP 200): no access_token",
            retry: None,
        },
        Case {
            name: "200 with wrong token_type",
            status: 200,
            retry_after: None,
            body: r#"{"token_type":"mac","access_token":"x"}"#,
            kind: Transient,
            error: None,
            aadsts: None,
            message: "unreadable token response (HTTP 200): token_type is not Bearer",
            retry: None,
        },
        Case {
            name: "device code pending",
            status: 400,
            retry_after: None,
            body: r#"{"error":"authorization_pending","error_description":"AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.","error_codes":[70016]}"#,
            kind: Transient,
            error: Some("authorization_pending"),
            aadsts: Some(70016),
            message: "authorization_pending (AADSTS70016)",
            retry: None,
        },
        Case {
            name: "device code slow_down",
            status: 400,
            retry_after: None,
            body: r#"{"error":"slow_down"}"#,
            kind: Transient,
            error: Some("slow_down"),
            aadsts: None,
            message: "slow_down",
            retry: Some(5),
        },
    ];
    for c in cases {
        let f = classify(c.status, c.retry_after, c.body.as_bytes(), now())
            .err()
            .unwrap_or_else(|| panic!("{}: expected a failure", c.name));
        assert_eq!(f.kind, c.kind, "{}", c.name);
        assert_eq!(f.status, Some(c.status), "{}", c.name);
        assert_eq!(f.error.as_deref(), c.error, "{}", c.name);
        assert_eq!(f.aadsts, c.aadsts, "{}", c.name);
        assert_eq!(f.message, c.message, "{}", c.name);
        assert_eq!(
            f.retry_after,
            c.retry.map(Duration::from_secs),
            "{}",
            c.name
        );
    }
}

#[test]
fn description_is_first_line_only() {
    let f = classify(400, None, AADSTS50173.as_bytes(), now())
        .err()
        .unwrap();
    let d = f.description.unwrap();
    assert!(d.starts_with("AADSTS50173: The provided grant has expired"));
    assert!(!d.contains("Trace ID"));
    assert!(d.chars().count() <= MAX_DESCRIPTION + 1);
}

#[test]
fn success() {
    let t = classify(200, None, SUCCESS.as_bytes(), now()).unwrap();
    assert_eq!(t.access_token.expose(), "eyJ0eXAiOi.AT");
    assert_eq!(
        t.refresh_token.as_ref().map(|s| s.expose().as_str()),
        Some("0.ARoA.RT")
    );
    assert_eq!(t.expires_in, Duration::from_secs(4398));
    assert_eq!(t.token_type.as_deref(), Some("Bearer"));
    assert!(!format!("{t:?}").contains("eyJ0eXAiOi"));
}

#[test]
fn success_variants() {
    // Some providers send expires_in as a string, some omit it, some send no refresh token.
    let t = classify(
        200,
        None,
        br#"{"access_token":"a","expires_in":"3599"}"#,
        now(),
    )
    .unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(3599));
    assert!(t.refresh_token.is_none());
    let t = classify(
        200,
        None,
        br#"{"access_token":"a","token_type":"bearer"}"#,
        now(),
    )
    .unwrap();
    assert_eq!(t.expires_in, DEFAULT_EXPIRES_IN);
    let t = classify(
        200,
        None,
        br#"{"access_token":"a","refresh_token":""}"#,
        now(),
    )
    .unwrap();
    assert!(t.refresh_token.is_none());
    assert!(
        classify(
            200,
            None,
            br#"{"access_token":"a","expires_in":"soon"}"#,
            now()
        )
        .is_err()
    );
}

#[test]
fn device_authorization() {
    let body = br#"{"user_code":"ABCD-EFGH","device_code":"DAQABAAEAAAD.secret","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ABCD-EFGH to authenticate."}"#;
    let d = classify_device_authorization(200, None, body, now()).unwrap();
    assert_eq!(d.device_code.expose(), "DAQABAAEAAAD.secret");
    assert_eq!(d.user_code, "ABCD-EFGH");
    assert_eq!(d.verification_uri, "https://microsoft.com/devicelogin");
    assert_eq!((d.expires_in.as_secs(), d.interval.as_secs()), (900, 5));
    assert!(d.message.unwrap().contains("ABCD-EFGH"));
    assert!(!format!("{:?}", d.device_code).contains("secret"));
    // Google: verification_url, no message.
    let body = br#"{"device_code":"AH-1","user_code":"GQVQ-JKEC","verification_url":"https://www.google.com/device","expires_in":1800,"interval":5}"#;
    let d = classify_device_authorization(200, None, body, now()).unwrap();
    assert_eq!(d.verification_uri, "https://www.google.com/device");
    let f = classify_device_authorization(200, None, br#"{"user_code":"x"}"#, now()).unwrap_err();
    assert_eq!(f.kind, ErrorKind::Transient);
    let f = classify_device_authorization(
        400,
        None,
        br#"{"error":"invalid_client","error_description":"AADSTS700016: Application with identifier 'x' was not found in the directory 'contoso'.","error_codes":[700016]}"#,
        now(),
    )
    .unwrap_err();
    assert_eq!((f.kind, f.aadsts), (ErrorKind::Permanent, Some(700016)));
}

#[test]
fn retry_after_forms() {
    assert_eq!(
        parse_retry_after(" 120 ", now()),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after("999999", now()), Some(MAX_RETRY_AFTER));
    // A date in the past means "now".
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now()),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
    );
    assert_eq!(parse_retry_after("soon", now()), None);
    assert_eq!(
        parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now()),
        None
    );
}

#[test]
fn retry_after_extremes_are_clamped_not_panics() {
    // delay-seconds beyond u64 and at u64::MAX: the longest wait we honour.
    for huge in ["18446744073709551615", "99999999999999999999999999"] {
        assert_eq!(
            parse_retry_after(huge, now()),
            Some(MAX_RETRY_AFTER),
            "{huge}"
        );
    }
    assert_eq!(parse_retry_after("0", now()), Some(Duration::ZERO));
    // The last representable IMF-fixdate year: far future, clamped.
    assert_eq!(
        parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
        Some(MAX_RETRY_AFTER)
    );
    // Years no HTTP-date can hold (RFC 9110 §5.6.7: 4DIGIT) are not dates: ignored, no overflow.
    for far in [
        "Fri, 31 Dec 292277026596 23:59:59 GMT",
        "Fri, 31 Dec 9223372036854775807 23:59:59 GMT",
        "Fri, 31 Dec -9223372036854775808 23:59:59 GMT",
        "Fri, 31 Dec 99999 23:59:59 GMT",
    ] {
        assert_eq!(parse_retry_after(far, now()), None, "{far}");
    }
    // Through the classifier too: a 429 with a far-future date waits at most the cap.
    let f = classify(429, Some("Fri, 31 Dec 9999 23:59:59 GMT"), b"", now()).unwrap_err();
    assert_eq!(f.retry_after, Some(MAX_RETRY_AFTER));
}

#[test]
fn expires_in_extremes_are_clamped() {
    let lifetime = |v: &str| {
        classify(
            200,
            None,
            format!(r#"{{"access_token":"a","expires_in":{v}}}"#).as_bytes(),
            now(),
        )
        .unwrap()
        .expires_in
    };
    assert_eq!(lifetime("18446744073709551615"), MAX_EXPIRES_IN);
    assert_eq!(lifetime("1e300"), MAX_EXPIRES_IN);
    assert_eq!(lifetime(r#""18446744073709551615""#), MAX_EXPIRES_IN);
    assert_eq!(lifetime("0"), Duration::ZERO);
    assert_eq!(lifetime("3599"), Duration::from_secs(3599));
}

#[test]
fn device_authorization_extremes_are_clamped() {
    let device = |expires_in: &str, interval: &str| {
        let body = format!(
            r#"{{"device_code":"d","user_code":"u","verification_uri":"https://x/device","expires_in":{expires_in},"interval":{interval}}}"#
        );
        let d = classify_device_authorization(200, None, body.as_bytes(), now()).unwrap();
        (d.expires_in, d.interval)
    };
    let max = u64::MAX.to_string();
    assert_eq!(
        device(&max, &max),
        (MAX_DEVICE_CODE_LIFETIME, MAX_POLL_INTERVAL)
    );
    assert_eq!(device("0", "0"), (Duration::ZERO, MIN_POLL_INTERVAL));
    assert_eq!(
        device("900", "5"),
        (Duration::from_secs(900), Duration::from_secs(5))
    );
    // A lifetime past the cap can be added to any clock without overflow.
    let (expires_in, _) = device(&max, "5");
    assert!(std::time::Instant::now().checked_add(expires_in).is_some());
}
