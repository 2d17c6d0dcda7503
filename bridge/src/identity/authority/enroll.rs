//! Enrollment (`[devices] admission = "enroll"`, docs/protocol.md
//! "Enrollment"): a device the registry does not know logs in with
//! username = its id and password = `{token}:{secret}`, the fleet
//! enrollment token and a secret it chose for itself. The broker's
//! listener thread asks [`Identity::connect`]; here, from memory, the token
//! is checked against its hash, the fleet-wide bound on enrollments
//! (`registrations_per_minute`) is taken, and the device enters the
//! registry as pending with the hash of its secret, bound to its id from
//! then on: another login with the token and another secret is refused,
//! and once accepted the secret alone logs it in. The record goes to the
//! core actor ([`Identity::take_enrolled`]), which stores it: nothing here
//! touches the disk.

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use schemas::provisioning::{split_enrollment, PasswordHash, MIN_ENROLL_SECRET};
use schemas::DeviceId;
use tokio::sync::Notify;

use super::{Admission, Entry, Identity, Refused, Standing};
use crate::identity::store::CredentialRecord;

/// Enrollments waiting for the core actor, and the fleet-wide bound.
pub(super) struct Enrolled {
    /// `None`: no bound (`registrations_per_minute = 0`).
    rate: Option<DefaultDirectRateLimiter>,
    fresh: Mutex<Vec<CredentialRecord>>,
    notify: Notify,
}

impl Enrolled {
    pub(super) fn new(per_minute: u32) -> Enrolled {
        Enrolled {
            rate: NonZeroU32::new(per_minute).map(|n| RateLimiter::direct(Quota::per_minute(n))),
            fresh: Mutex::new(Vec::new()),
            notify: Notify::new(),
        }
    }
}

impl Identity {
    /// The secret of an enrollment login's password, when its token is the
    /// fleet's (and admission is `"enroll"`).
    pub(super) fn enrollment_secret<'p>(&self, password: &'p str) -> Option<&'p str> {
        let Admission::Enroll { token } = &self.config.admission else {
            return None;
        };
        let (t, secret) = split_enrollment(password)?;
        token.verify(t).then_some(secret)
    }

    /// A login of `id`, which the registry does not know, with `password`:
    /// admitted as pending when it is an enrollment login with the fleet's
    /// token, a long enough secret and room in this minute's bound.
    pub(super) fn enroll(&self, id: &DeviceId, password: &str) -> Result<(), Refused> {
        let Some(secret) = self.enrollment_secret(password) else {
            return Err(Refused::BadCredentials);
        };
        if secret.chars().count() < MIN_ENROLL_SECRET {
            return Err(Refused::BadCredentials);
        }
        if let Some(rate) = &self.enrolled.rate {
            if rate.check().is_err() {
                return Err(Refused::RegistrationRate);
            }
        }
        let record =
            CredentialRecord::new(id.clone(), secret, Standing::Pending, crate::rt::unix_now());
        let mut state = self.write();
        if let Some(e) = state.devices.get(id) {
            // Another login enrolled it a moment ago: its secret decides.
            let ok = e.standing != Standing::Revoked
                && e.hash.as_ref().is_some_and(|h| h.verify(secret));
            return if ok {
                Ok(())
            } else {
                Err(Refused::BadCredentials)
            };
        }
        state.devices.insert(
            id.clone(),
            Entry {
                hash: PasswordHash::parse(&record.hash),
                standing: Standing::Pending,
                trusts: None,
            },
        );
        drop(state);
        self.enrolled
            .fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
        self.enrolled.notify.notify_one();
        self.changed();
        Ok(())
    }

    /// Waits until a device enrolled (at once if one did since the last
    /// [`Identity::take_enrolled`]).
    pub async fn enrolled(&self) {
        self.enrolled.notify.notified().await
    }

    /// The enrollments made since the last call, for the core actor to
    /// store.
    pub fn take_enrolled(&self) -> Vec<CredentialRecord> {
        std::mem::take(
            &mut *self
                .enrolled
                .fresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Pending devices (enrolled, waiting for `ota devices accept`), by id.
    pub fn pending(&self) -> Vec<DeviceId> {
        let mut ids: Vec<DeviceId> = self
            .read()
            .devices
            .iter()
            .filter(|(_, e)| e.standing == Standing::Pending)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}
