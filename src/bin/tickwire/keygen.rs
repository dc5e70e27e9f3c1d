//! `tickwire keygen`: a new key for authenticated logins (protocol section
//! 11): 32 random bytes from the operating system, written to a new file
//! readable by its owner only; what is printed is the key id and the line
//! for the server's credentials file (the SHA-256 of the secret), never
//! the secret.

use std::io;
use std::path::Path;

use tickwire::session::auth::{write_secret_file, Credentials, Permissions};
use tickwire::wire::{KeyId, Secret};

/// Makes the key, writes `secret_file`, prints the credentials line.
pub(crate) fn run(
    key_id: &KeyId,
    secret_file: &Path,
    permissions: Option<Permissions>,
) -> io::Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("the random generator failed: {e}")))?;
    let secret = Secret::new(bytes);
    bytes.fill(0);
    write_secret_file(secret_file, &secret).map_err(|e| io::Error::other(e.to_string()))?;
    eprintln!(
        "key {key_id}: secret written to {} (mode 0600); add this line to the server's credentials file:",
        secret_file.display()
    );
    println!("{}", Credentials::line(key_id, &secret, permissions));
    Ok(())
}

/// `--permissions subscribe,retransmit`.
pub(crate) fn permissions(text: &str) -> Result<Permissions, String> {
    let mut p = Permissions {
        subscribe: false,
        retransmit: false,
    };
    for name in text.split(',') {
        match name.trim() {
            "subscribe" => p.subscribe = true,
            "retransmit" => p.retransmit = true,
            other => return Err(format!("`{other}`: permissions are subscribe, retransmit")),
        }
    }
    Ok(p)
}

/// `--key-id`: 1 to 16 of `A-Z a-z 0-9 - _ .`, checked at start.
pub(crate) fn key_id(text: &str) -> Result<KeyId, String> {
    KeyId::new(text).map_err(|e| e.to_string())
}
