//! How each [`Command`] changes the tables, inside one write transaction.
use super::{codec, corrupted, encode_failed, Defect, Refusal, StoreError, Tx};
use super::{IDENTITIES, KEYS, POLICIES, SECRETS};
use crate::command::Command;
use crate::records::IdentityRecord;
use crate::store::DEFAULT_ENCLAVE;

pub(super) fn apply(tx: &mut Tx<'_>, cmd: &Command) -> Result<(), StoreError> {
    match cmd {
        Command::CreateKey { enclave, name, key } => {
            let plaintext = codec::encode_key(key).map_err(encode_failed)?;
            tx.put(KEYS, enclave, name, &plaintext, true)
        }
        Command::DeleteKey { enclave, name } => tx.delete(KEYS, enclave, name),
        Command::CreatePolicy {
            enclave,
            name,
            policy,
            replace,
        } => {
            let plaintext = codec::encode_policy(policy).map_err(encode_failed)?;
            tx.put(POLICIES, enclave, name, &plaintext, !replace)
        }
        Command::DeletePolicy { enclave, name } => tx.delete(POLICIES, enclave, name),
        Command::CreateIdentity {
            enclave,
            identity,
            record,
            replace,
        } => create_identity(tx, enclave, identity, record, *replace),
        Command::ChildIdentity {
            enclave,
            identity,
            record,
            assign,
        } => child_identity(tx, enclave, identity, record, *assign),
        Command::DeleteIdentity { enclave, identity } => {
            let record = read_identity(tx, enclave, identity)?;
            if let Ok(mut parent) = read_identity(tx, enclave, &record.created_by) {
                parent.children.retain(|c| c != identity);
                write_identity(tx, enclave, &record.created_by, &parent)?;
            }
            delete_identity_tree(tx, enclave, identity)
        }
        Command::CreateSecret {
            enclave,
            name,
            secret,
        } => {
            let plaintext = codec::encode_secret(secret).map_err(encode_failed)?;
            tx.put(SECRETS, enclave, name, &plaintext, true)
        }
        Command::DeleteSecret { enclave, name } => tx.delete(SECRETS, enclave, name),
        Command::CreateEnclave { name, record } => tx.create_enclave(name, record),
        // Membership changes are configuration entries of the log, never applied as commands.
        Command::Expand { .. } | Command::Shrink { .. } => Ok(()),
        Command::DeleteEnclave { name } => {
            if name == DEFAULT_ENCLAVE {
                return Err(StoreError::Refused(Refusal::DeleteDefaultEnclave));
            }
            tx.delete_enclave(name)
        }
    }
}

fn create_identity(
    tx: &mut Tx<'_>,
    enclave: &str,
    identity: &str,
    record: &IdentityRecord,
    replace: bool,
) -> Result<(), StoreError> {
    let mut record = record.clone();
    match read_identity(tx, enclave, identity) {
        Ok(old) if replace => {
            record.children = old.children;
            // A re-assigned identity moves to its new parent: the old one no longer
            // lists it (else deleting the old parent would delete it too).
            if old.created_by != record.created_by && old.created_by != *identity {
                if let Ok(mut parent) = read_identity(tx, enclave, &old.created_by) {
                    parent.children.retain(|c| c != identity);
                    write_identity(tx, enclave, &old.created_by, &parent)?;
                }
            }
        }
        Ok(_) => return Err(StoreError::Exists),
        Err(StoreError::NotFound) => {}
        Err(err) => return Err(err),
    }
    let plaintext = codec::encode_identity(&record).map_err(encode_failed)?;
    tx.put(IDENTITIES, enclave, identity, &plaintext, false)?;
    // Link the child to its parent, if the parent is an identity of this enclave
    // (the cluster admin and config-declared identities have no record as parent).
    if record.created_by != *identity {
        if let Ok(mut parent) = read_identity(tx, enclave, &record.created_by) {
            if !parent.children.iter().any(|c| c == identity) {
                parent.children.push(identity.to_owned());
                write_identity(tx, enclave, &record.created_by, &parent)?;
            }
        }
    }
    Ok(())
}

/// [`Command::ChildIdentity`]: the checks that make a change by an identity of the enclave
/// safe against every write ordered before it (see the command's doc).
fn child_identity(
    tx: &mut Tx<'_>,
    enclave: &str,
    identity: &str,
    record: &IdentityRecord,
    assign: bool,
) -> Result<(), StoreError> {
    let parent = match read_identity(tx, enclave, &record.created_by) {
        Ok(parent) => parent,
        Err(StoreError::NotFound) => return Err(StoreError::Refused(Refusal::CallerGone)),
        Err(err) => return Err(err),
    };
    if parent.expired(record.created_at) {
        return Err(StoreError::Refused(Refusal::CallerExpired));
    }
    if !assign {
        return create_identity(tx, enclave, identity, record, false);
    }
    let mut target = read_identity(tx, enclave, identity)?;
    if target.admin {
        return Err(StoreError::Refused(Refusal::AssignToEnclaveAdmin));
    }
    if !descends_from(tx, enclave, identity, &record.created_by)? {
        return Err(StoreError::Refused(Refusal::NotCreatedByCaller {
            identity: identity.into(),
        }));
    }
    target.policy = record.policy.clone();
    write_identity(tx, enclave, identity, &target)
}

/// True if `ancestor` is on `id`'s chain of creators (`created_by`), not counting `id` itself.
/// A chain ends at a creator without a record; a cycle ends it too.
pub(crate) fn descends_from(
    tx: &Tx<'_>,
    enclave: &str,
    id: &str,
    ancestor: &str,
) -> Result<bool, StoreError> {
    let mut seen = std::collections::BTreeSet::from([id.to_owned()]);
    let mut creator = read_identity(tx, enclave, id)?.created_by;
    loop {
        if creator == ancestor {
            return Ok(true);
        }
        if !seen.insert(creator.clone()) {
            return Ok(false);
        }
        creator = match read_identity(tx, enclave, &creator) {
            Ok(rec) => rec.created_by,
            Err(StoreError::NotFound) => return Ok(false),
            Err(err) => return Err(err),
        };
    }
}

fn read_identity(tx: &Tx<'_>, enclave: &str, id: &str) -> Result<IdentityRecord, StoreError> {
    let plaintext = tx.get(IDENTITIES, enclave, id)?;
    codec::decode_identity(&plaintext)
        .map_err(|why| corrupted(IDENTITIES, enclave, id, Defect::Undecodable(why)))
}

fn write_identity(
    tx: &mut Tx<'_>,
    enclave: &str,
    id: &str,
    rec: &IdentityRecord,
) -> Result<(), StoreError> {
    let plaintext = codec::encode_identity(rec).map_err(encode_failed)?;
    tx.put(IDENTITIES, enclave, id, &plaintext, false)
}

/// Deletes `id` and its descendants, breadth first and without recursion, so that neither a
/// long chain nor a cycle (re-assignment can make one) stops the delete. A child that is
/// already gone is skipped.
fn delete_identity_tree(tx: &mut Tx<'_>, enclave: &str, id: &str) -> Result<(), StoreError> {
    let root = read_identity(tx, enclave, id)?;
    let mut seen = std::collections::BTreeSet::from([id.to_owned()]);
    let mut queue: std::collections::VecDeque<(String, Vec<String>)> =
        std::collections::VecDeque::from([(id.to_owned(), root.children)]);
    while let Some((id, children)) = queue.pop_front() {
        for child in children {
            if !seen.insert(child.clone()) {
                continue;
            }
            match read_identity(tx, enclave, &child) {
                // A stale link (the child was re-assigned to another parent) is not followed.
                Ok(rec) if rec.created_by == id => queue.push_back((child, rec.children)),
                Ok(_) => {}
                Err(StoreError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        tx.delete(IDENTITIES, enclave, &id)?;
    }
    Ok(())
}
