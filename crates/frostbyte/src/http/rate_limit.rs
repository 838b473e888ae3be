//! Per-tenant request rate limiting: one token bucket (GCRA, via `governor`) per tenant, sized from the tenant's
//! `quotas.requests_per_second` and `quotas.burst`. The quota is read from the tenant on every request, and a
//! bucket whose quota no longer matches is replaced, so a PATCH takes effect on the next request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use frostbyte_core::TenantId;
use frostbyte_core::tenant::Quotas;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

struct Bucket {
    rps: u32,
    burst: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

/// The buckets of every tenant seen since start-up (one small entry per tenant).
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// Takes one token from the tenant's bucket, or says how long until one is available.
    pub fn check(&self, tenant: &TenantId, quotas: &Quotas) -> Result<(), Duration> {
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let bucket = buckets.entry(tenant.clone()).or_insert_with(|| new_bucket(quotas));
            if bucket.rps != quotas.requests_per_second || bucket.burst != quotas.burst {
                *bucket = new_bucket(quotas);
            }
            Arc::clone(&bucket.limiter)
        };
        limiter.check().map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

fn new_bucket(quotas: &Quotas) -> Bucket {
    let rps = NonZeroU32::new(quotas.requests_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(quotas.burst).unwrap_or(NonZeroU32::MIN);
    Bucket {
        rps: quotas.requests_per_second,
        burst: quotas.burst,
        limiter: Arc::new(RateLimiter::direct(Quota::per_second(rps).allow_burst(burst))),
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_and_rebuild_on_quota_change() {
        let limits = RateLimits::default();
        let tenant = TenantId::parse("acme").unwrap();
        let quotas = Quotas { requests_per_second: 1, burst: 2, ..Quotas::default() };
        assert!(limits.check(&tenant, &quotas).is_ok());
        assert!(limits.check(&tenant, &quotas).is_ok());
        let wait = limits.check(&tenant, &quotas).unwrap_err();
        assert_eq!(retry_after_secs(wait), 1);
        let roomier = Quotas { requests_per_second: 100, burst: 100, ..Quotas::default() };
        assert!(limits.check(&tenant, &roomier).is_ok(), "a changed quota gets a fresh bucket");
        let other = TenantId::parse("other").unwrap();
        assert!(limits.check(&other, &quotas).is_ok(), "tenants do not share buckets");
    }
}
