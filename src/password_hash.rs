//! The argon2id PHC password-hash format: checking that a configured hash is one we can verify.
//! Used by config loading (to reject a bad hash at start-up) and by `auth` (which verifies
//! passwords against these hashes).

use argon2::Algorithm;
use argon2::password_hash::PasswordHash;

/// Check that `hash` is an argon2 PHC string we can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC password hash ({e}); expected `$argon2id$v=19$m=...`"))?;
    match Algorithm::try_from(parsed.algorithm) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "hash algorithm `{}` is not supported; expected argon2id",
            parsed.algorithm
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_hashes_are_explained() {
        assert!(check_hash("plaintext").unwrap_err().contains("PHC"));
        assert!(
            check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA")
                .unwrap_err()
                .contains("argon2id")
        );
    }
}
