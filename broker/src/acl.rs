//! The embedded broker's topic ACL: rumqttd's router asks it for every
//! PUBLISH, will and SUBSCRIBE filter (vendor/rumqttd/OTA-PATCHES.md,
//! patch 7), and it asks the [`Authority`](crate::Authority) set with
//! [`EmbeddedBroker::set_authority`](crate::EmbeddedBroker::set_authority).
//! Without one everything is allowed, as before the patch. The broker's
//! own in-process link (the meter's tick) is never asked.
//!
//! This runs on the router thread, which every client waits on: the
//! authority answers from memory.

use rumqttd::TopicAcl;

use crate::auth::{guarded, Auth, TICK_CLIENT_ID};

impl TopicAcl for Auth {
    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        if client_id == TICK_CLIENT_ID {
            return true;
        }
        match self.authority() {
            None => true,
            Some(a) => guarded("publish", client_id, || a.may_publish(client_id, topic)),
        }
    }

    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool {
        if client_id == TICK_CLIENT_ID {
            return true;
        }
        match self.authority() {
            None => true,
            Some(a) => guarded("subscribe", client_id, || {
                a.may_subscribe(client_id, filter)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authority::{Authority, ConnectVerdict, Login};

    /// A login is its client id; devices publish under their own id; no
    /// one subscribes to `#`.
    struct Own;

    impl Authority for Own {
        fn connect(&self, client_id: &str, login: Login<'_>) -> ConnectVerdict {
            match login {
                Login::Password { username, .. } if username == client_id => ConnectVerdict::Accept,
                _ => ConnectVerdict::Refuse("client_id_mismatch"),
            }
        }
        fn may_publish(&self, client_id: &str, topic: &str) -> bool {
            topic.starts_with(&format!("{client_id}/"))
        }
        fn may_subscribe(&self, _: &str, filter: &str) -> bool {
            filter != "#"
        }
    }

    struct Panics;

    impl Authority for Panics {
        fn connect(&self, _: &str, _: Login<'_>) -> ConnectVerdict {
            panic!("registry bug")
        }
        fn may_publish(&self, _: &str, _: &str) -> bool {
            panic!("registry bug")
        }
        fn may_subscribe(&self, _: &str, _: &str) -> bool {
            panic!("registry bug")
        }
    }

    fn auth() -> Auth {
        Auth::new([("bridge".to_owned(), "pw".to_owned())].into(), 10)
    }

    #[test]
    fn without_an_authority_everything_is_allowed() {
        let a = auth();
        assert!(a.may_publish("dev-1", "dev-2/status"));
        assert!(a.may_subscribe("dev-1", "#"));
    }

    #[test]
    fn the_authority_decides() {
        let a = auth();
        a.set_authority(Arc::new(Own));
        assert!(a.may_publish("dev-1", "dev-1/status"));
        assert!(!a.may_publish("dev-1", "dev-2/status"));
        assert!(a.may_subscribe("dev-1", "dev-1/groups"));
        assert!(!a.may_subscribe("dev-1", "#"));
        // Our tick link is never asked.
        assert!(a.may_publish(TICK_CLIENT_ID, "$ota-broker/tick"));
    }

    #[test]
    fn a_panicking_authority_refuses() {
        let a = auth();
        a.set_authority(Arc::new(Panics));
        assert!(!a.may_publish("dev-1", "dev-1/status"));
        assert!(!a.may_subscribe("dev-1", "dev-1/groups"));
        assert!(!a.authorize("dev-1", "dev-1", "pw"));
        assert!(a.may_publish(TICK_CLIENT_ID, "$ota-broker/tick"));
    }

    #[test]
    fn with_an_authority_it_decides_logins_not_the_users_map() {
        let a = auth();
        assert!(a.authorize("anything", "bridge", "pw"));
        a.set_authority(Arc::new(Own));
        assert!(!a.authorize("anything", "bridge", "pw"));
        assert!(a.authorize("dev-1", "dev-1", "x"));
    }
}
