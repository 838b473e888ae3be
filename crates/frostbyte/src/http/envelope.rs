//! The success envelope (`{"success": true, "data": ...}`, lists add `meta`) and paging parameters.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use frostbyte_core::page::{Page, PageRequest};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// `{"success": true, "data": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

/// A page of a list: `{"success": true, "data": [...], "meta": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEnvelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: Vec<T>,
    pub meta: Meta,
}

/// Paging metadata.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Meta {
    pub total: u64,
    pub page: u32,
    pub limit: u32,
    pub pages: u64,
}

/// A 200 with `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::OK, data)
}

/// A 201 with `data`.
pub fn created<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::CREATED, data)
}

/// A 202 with `data`.
pub fn accepted<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::ACCEPTED, data)
}

fn with_status<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, axum::Json(Envelope { success: true, data })).into_response()
}

/// A 200 with one page of a list.
pub fn list<T: Serialize>(page: Page<T>, req: PageRequest) -> Response {
    let limit = u64::from(req.limit.max(1));
    let meta = Meta { total: page.total, page: req.page, limit: req.limit, pages: page.total.div_ceil(limit) };
    axum::Json(ListEnvelope { success: true, data: page.items, meta }).into_response()
}

/// Validates `page` (from 1) and `limit` (1 to `max`, default `default`) as given in a query string.
pub fn page_request(page: Option<u32>, limit: Option<u32>, default: u32, max: u32) -> Result<PageRequest, ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(default);
    let mut details = Vec::new();
    if page < 1 {
        details.push(frostbyte_core::tenant::FieldViolation::new("page", page, "at least 1"));
    }
    if !(1..=max).contains(&limit) {
        details.push(frostbyte_core::tenant::FieldViolation::new("limit", limit, format!("between 1 and {max}")));
    }
    if details.is_empty() {
        Ok(PageRequest::new(page, limit))
    } else {
        Err(ApiError::validation(format!("invalid paging: page is from 1, limit from 1 to {max}"), details))
    }
}
