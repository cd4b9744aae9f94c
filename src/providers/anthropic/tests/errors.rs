use crate::providers::anthropic::{classify_error, kind_from_anthropic_type};
use crate::providers::error_kind::ErrorKind;

fn body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }))
    .unwrap()
}

#[test]
fn documented_error_table() {
    let cases = [
        (
            400,
            "invalid_request_error",
            ErrorKind::InvalidRequest,
            false,
        ),
        (401, "authentication_error", ErrorKind::Auth, false),
        (402, "billing_error", ErrorKind::Auth, false),
        (403, "permission_error", ErrorKind::Auth, false),
        (404, "not_found_error", ErrorKind::NotFound, false),
        (413, "request_too_large", ErrorKind::TooLarge, false),
        (429, "rate_limit_error", ErrorKind::RateLimited, true),
        (500, "api_error", ErrorKind::Server, true),
        (504, "timeout_error", ErrorKind::Server, true),
        (529, "overloaded_error", ErrorKind::Overloaded, true),
    ];
    for (status, error_type, kind, retryable) in cases {
        let info = classify_error(status, &body(error_type, "details here"));
        assert_eq!(info.kind, kind, "{error_type}");
        assert_eq!(info.retryable, retryable, "{error_type}");
        assert_eq!(info.message, "details here");
    }
}

#[test]
fn roles_must_alternate_example() {
    let info = classify_error(
        400,
        &body(
            "invalid_request_error",
            "messages: roles must alternate between \"user\" and \"assistant\"",
        ),
    );
    assert_eq!(info.kind, ErrorKind::InvalidRequest);
    assert!(!info.retryable);
    assert!(info.message.starts_with("messages: roles must alternate"));
}

#[test]
fn non_json_and_unknown_types_fall_back_to_status() {
    let gateway = classify_error(502, b"<html><body>502 Bad Gateway</body></html>");
    assert_eq!(gateway.kind, ErrorKind::Server);
    assert!(gateway.retryable);
    assert!(gateway.message.contains("502 Bad Gateway"));

    let overloaded = classify_error(529, b"");
    assert_eq!(overloaded.kind, ErrorKind::Overloaded);
    assert!(overloaded.retryable);
    assert!(overloaded.message.contains("529"));

    let unknown = classify_error(409, &body("brand_new_error", "conflict"));
    assert_eq!(unknown.kind, ErrorKind::Other);
    assert!(!unknown.retryable);
    assert_eq!(unknown.message, "conflict");

    // An unknown error type under a 5xx is still worth retrying.
    let unknown_5xx = classify_error(503, &body("brand_new_error", "later"));
    assert_eq!(unknown_5xx.kind, ErrorKind::Overloaded);
    assert!(unknown_5xx.retryable);
}

#[test]
fn type_lookup() {
    assert_eq!(
        kind_from_anthropic_type("overloaded_error"),
        Some(ErrorKind::Overloaded)
    );
    assert_eq!(kind_from_anthropic_type("nope"), None);
}
