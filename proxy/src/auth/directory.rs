//! The users and ACLs a proxy checks requests against: fetched from the controller and served
//! from memory. A known user is served at once and, when what was fetched is older than
//! [`REFRESH`], fetched again in the background; a request only waits for the controller when
//! nothing was fetched yet or its access key is unknown (at most every [`MISS_REFETCH`]). When
//! the controller cannot be reached, what was fetched before keeps serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use vela_proto::ControllerApi;
use vela_proto::auth::{Acl, AuthData, User, UserName};

use super::AuthFailure;

/// How long fetched users and ACLs are used before they are fetched again (in the background).
pub(crate) const REFRESH: Duration = Duration::from_secs(2);
/// An unknown access key fetches again at once, but not more often than this.
pub(crate) const MISS_REFETCH: Duration = Duration::from_millis(250);

/// Users and ACLs as fetched at `at`.
pub(crate) struct Loaded {
    pub users: HashMap<String, User>,
    pub acls: HashMap<UserName, Acl>,
    at: Instant,
}

impl Loaded {
    fn new(data: AuthData) -> Self {
        Self {
            users: data
                .users
                .into_iter()
                .map(|u| (u.name.as_str().to_owned(), u))
                .collect(),
            acls: data
                .acls
                .into_iter()
                .map(|a| (a.subject.0.clone(), a))
                .collect(),
            at: Instant::now(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    controller: Arc<dyn ControllerApi>,
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// One fetch a request waits for at a time.
    fetching: tokio::sync::Mutex<()>,
    /// A background refresh is running.
    refreshing: AtomicBool,
    /// When a fetch was last tried (successful or not).
    attempted: Mutex<Option<Instant>>,
    /// Bumped by `invalidate`: a fetch that started before keeps its answer to itself.
    generation: AtomicU64,
    /// Set by `invalidate`: the next request waits for a fetch (what was fetched before still
    /// serves if the controller cannot be reached).
    must_fetch: AtomicBool,
}

impl Directory {
    pub fn new(controller: Arc<dyn ControllerApi>) -> Self {
        Self {
            inner: Arc::new(Inner {
                controller,
                loaded: RwLock::new(None),
                fetching: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
                attempted: Mutex::new(None),
                generation: AtomicU64::new(0),
                must_fetch: AtomicBool::new(false),
            }),
        }
    }

    /// Makes the next request fetch again (after a change made through this proxy).
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.must_fetch.store(true, Ordering::Release);
    }

    /// The users and ACLs to check `access_key` against.
    pub async fn knowing(&self, access_key: &str) -> Result<Arc<Loaded>, AuthFailure> {
        let current = self.inner.loaded.read().clone();
        if let Some(loaded) = current
            && !self.inner.must_fetch.load(Ordering::Acquire)
        {
            if loaded.users.contains_key(access_key) {
                if loaded.at.elapsed() >= REFRESH {
                    self.refresh_in_background();
                }
                return Ok(loaded);
            }
            let recent = self
                .inner
                .attempted
                .lock()
                .is_some_and(|at| at.elapsed() < MISS_REFETCH);
            if recent {
                return Ok(loaded);
            }
        }
        self.inner.fetch_now().await
    }

    fn refresh_in_background(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(err) = inner.fetch_now().await {
                tracing::debug!(error = ?err, "refreshing users and ACLs");
            }
            inner.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    /// Fetches from the controller (one fetch at a time); on failure serves what was fetched
    /// before, if anything.
    async fn fetch_now(&self) -> Result<Arc<Loaded>, AuthFailure> {
        let asked = Instant::now();
        let _one = self.fetching.lock().await;
        // Another fetch may have finished while this one waited.
        if let Some(loaded) = self.loaded.read().clone()
            && loaded.at >= asked
            && !self.must_fetch.load(Ordering::Acquire)
        {
            return Ok(loaded);
        }
        *self.attempted.lock() = Some(Instant::now());
        let generation = self.generation.load(Ordering::Acquire);
        match self.controller.auth_data().await {
            Ok(data) => {
                let loaded = Arc::new(Loaded::new(data));
                // Only what was fetched after the last invalidation may be kept.
                if self.generation.load(Ordering::Acquire) == generation {
                    *self.loaded.write() = Some(loaded.clone());
                    self.must_fetch.store(false, Ordering::Release);
                }
                Ok(loaded)
            }
            Err(err) => match self.loaded.read().clone() {
                Some(stale) => {
                    tracing::warn!(error = %err, "fetching users and ACLs failed; using the ones fetched before");
                    Ok(stale)
                }
                None => {
                    // The reason may name users and keys: it goes to the log, not to clients.
                    tracing::warn!(error = %err, "fetching users and ACLs failed");
                    Err(AuthFailure::Unavailable(
                        "users cannot be fetched from the controller now; try again".into(),
                    ))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use vela_proto::auth::{Password, UserStatus, UserType};

    use super::*;
    use crate::tests::fakes::FakeController;

    fn user(name: &str) -> User {
        User {
            name: UserName::new(name).expect("name"),
            password: Password::new("pw").expect("password"),
            user_type: UserType::Normal,
            status: UserStatus::Enabled,
        }
    }

    #[tokio::test]
    async fn known_users_are_served_from_memory_while_the_controller_is_away() {
        let controller = Arc::new(FakeController::default());
        controller.create_user(user("alice")).await.expect("alice");
        let directory = Directory::new(controller.clone());
        let known = |l: &Loaded, name: &str| l.users.contains_key(name);
        assert!(known(
            &directory.knowing("alice").await.expect("fetched"),
            "alice"
        ));

        controller.set_down(true);
        tokio::time::sleep(REFRESH).await;
        // Stale: served at once, refreshed in the background (which fails and keeps it).
        let started = Instant::now();
        assert!(known(
            &directory.knowing("alice").await.expect("stale"),
            "alice"
        ));
        assert!(started.elapsed() < REFRESH);
        // An unknown key asks the controller; it is away, so the caller learns "unknown".
        tokio::time::sleep(MISS_REFETCH).await;
        assert!(!known(
            &directory.knowing("bob").await.expect("stale"),
            "bob"
        ));

        controller.set_down(false);
        controller.create_user(user("bob")).await.expect("bob");
        tokio::time::sleep(MISS_REFETCH).await;
        assert!(known(
            &directory.knowing("bob").await.expect("fetched"),
            "bob"
        ));
        // A change made through this proxy is seen at once after invalidate.
        controller.create_user(user("carol")).await.expect("carol");
        directory.invalidate();
        assert!(known(
            &directory.knowing("carol").await.expect("fetched"),
            "carol"
        ));
    }

    #[tokio::test]
    async fn nothing_fetched_and_no_controller_is_unavailable() {
        let controller = Arc::new(FakeController::default());
        controller.set_down(true);
        let directory = Directory::new(controller);
        assert!(matches!(
            directory.knowing("alice").await.err(),
            Some(AuthFailure::Unavailable(_))
        ));
    }
}
