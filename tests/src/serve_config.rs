//! What every `ota.toml` written for `ota serve` by tests and tools
//! shares: the director key file it must name (the bridge does not start
//! without `[bridge] director_key`) and the head of the file, in one place.

use std::path::Path;

use schemas::keys::SigningKey;

/// The `[bridge]` line naming the key [`write_director`] wrote.
pub const DIRECTOR_KEY_LINE: &str = "director_key = \"director.key\"\n";

/// Writes `key` as `director.key` (and its public half as `director.pub`,
/// what devices and a pinning CLI are given) in `dir`. Returns the
/// `[bridge]` line that names it ([`DIRECTOR_KEY_LINE`]).
pub fn write_director(dir: &Path, key: &SigningKey) -> std::io::Result<&'static str> {
    std::fs::write(
        dir.join("director.key"),
        schemas::keys::signing_key_to_text(key),
    )?;
    std::fs::write(
        dir.join("director.pub"),
        schemas::keys::verifying_key_to_text(&key.verifying_key()),
    )?;
    Ok(DIRECTOR_KEY_LINE)
}

/// Writes the director key ([`write_director`]) and returns the head of
/// the config: `[bridge]` (data in `data`, the operator, release and
/// director keys `operator.pub`, `release.pub`, `director.key`) and
/// `[operator] key = "operator.key"`; the caller adds its own `[operator]`
/// lines, then `[broker]` and the rest.
pub fn bridge_head(dir: &Path, director: &SigningKey) -> std::io::Result<String> {
    let line = write_director(dir, director)?;
    Ok(format!(
        "[bridge]\n\
         data_dir = \"data\"\n\
         operator_keys = [\"operator.pub\"]\n\
         release_keys = [\"release.pub\"]\n\
         {line}\
         [operator]\n\
         key = \"operator.key\"\n"
    ))
}
