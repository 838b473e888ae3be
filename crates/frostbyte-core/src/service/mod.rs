//! Use-cases: the operations the HTTP API and the CLI share. Handlers and commands extract input, call one of
//! these, and map the error; the rules live here, once.

pub mod audit;
pub mod lifecycle;
pub mod search;
pub mod tenants;

pub use tenants::{Actor, CreateKey, CreateTenant, CreatedKey, ServiceError, ServiceResult, TenantService};
