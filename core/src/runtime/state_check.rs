//! Trying a version's `get-state` on bytes no old version wrote: what a
//! corrupted or hostile state hand-over would do, without an upgrade. Used
//! by the property tests; an operator can use it to check a saved state.

use std::path::Path;
use std::sync::Arc;

use super::Core;

/// The name the trial instance runs under: not a valid module name, so it
/// can collide with no module, and nothing can send to it.
const TRIAL_NAME: &str = "$get-state-trial";

impl Core {
    /// Hand `state` to the `get-state` of a fresh instance of the component
    /// at `path`, under the limits every instance has (memory, call
    /// deadline, largest state). The instance is never registered and is
    /// dropped afterwards, with anything its call set up (timers,
    /// subscriptions). `Ok` if the guest took the state; otherwise the
    /// guest's error, its trap, or why it could not be tried.
    pub(super) fn try_get_state(&self, path: &Path, state: &[u8]) -> Result<(), String> {
        // Like a command: no transaction runs meanwhile. The version stays
        // in the repository until the next cleanup, as one a refused Load
        // fetched does, so that trying many states compiles it once.
        let _admin = self.admin.lock().expect("admin poisoned");
        let max = self.env.settings.max_state_bytes;
        if state.len() > max {
            return Err(format!(
                "the state is {} bytes, more than the {max} a version may take",
                state.len()
            ));
        }
        let version = self.repo.fetch(path).map_err(|e| e.to_string())?;
        let outcome =
            match self.instantiate(&version, TRIAL_NAME, &Arc::from(Vec::new()), &self.limits) {
                Err(e) => Err(e.to_string()),
                Ok(mut imp) => match imp.get_state(state, None) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("get-state returned an error: {e}")),
                    Err(fault) => Err(fault.to_string()),
                },
            };
        self.bus.forget(TRIAL_NAME);
        outcome
    }
}
