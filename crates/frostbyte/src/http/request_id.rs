//! Request ids: every response carries `x-request-id`, and an error body's `request_id` equals it.
//!
//! A client-sent id is honoured when it is sane (1 to 128 visible ASCII characters); otherwise it is dropped
//! before tower-http's `SetRequestId` generates a UUID. The id of the request being served is kept in a
//! task-local, so an [`ApiError`](super::ApiError) rendered anywhere inside the handler can quote it.

use axum::http::{HeaderName, HeaderValue, Request};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served, if called inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id.
pub(crate) async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// Whether a client-sent id may be used as is.
pub fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// Drops a client-sent `x-request-id` that is not sane (or sent more than once), so a fresh one is generated.
pub(crate) fn drop_insane<B>(mut req: Request<B>) -> Request<B> {
    let headers = req.headers_mut();
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (Some(v), None) => is_sane(v),
        _ => false,
    };
    if !keep {
        headers.remove(&X_REQUEST_ID);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanity() {
        assert!(is_sane(&HeaderValue::from_static("abc-123_XYZ.~")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("has space")));
        assert!(!is_sane(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
        assert!(is_sane(&HeaderValue::from_str(&"a".repeat(128)).unwrap()));
    }
}
