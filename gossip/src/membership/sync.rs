//! Push-pull state sync: a peer sends another its whole member table and gets the other's
//! back, as memberlist does over TCP. SWIM alone only spreads changes; a peer that joins a
//! pool of a thousand learns of the members already there from an announce reply holding
//! the few that fit in one datagram, then by chance. With a sync on join it knows the whole
//! pool after one round trip, and a sync with a random member now and then repairs whatever
//! gossip missed.
//!
//! On the wire a sync is a series of datagrams (sealed like every other), each holding as
//! many members as fit; only the first of a request asks for the reply, so the other side
//! answers once.

use foca::Member;

use super::PeerId;

/// First byte of a datagram's plaintext: what follows.
pub(super) const FOCA_TAG: u8 = 0;
pub(super) const SYNC_TAG: u8 = 1;

/// Splits `members` into sync datagrams (plaintext, tag included) of at most `max_len`
/// bytes. The first asks for the receiver's table in return when `want_reply`. Always at
/// least one datagram, so an empty table can still ask.
pub(super) fn encode<'a>(
    members: impl Iterator<Item = &'a Member<PeerId>>,
    want_reply: bool,
    max_len: usize,
) -> Vec<Vec<u8>> {
    let header = |reply: bool| vec![SYNC_TAG, u8::from(reply)];
    let mut datagrams = vec![header(want_reply)];
    for member in members {
        let Ok(encoded) = postcard::to_allocvec(member) else {
            continue;
        };
        let current = datagrams.last_mut().expect("never empty");
        if current.len() + encoded.len() > max_len && current.len() > 2 {
            datagrams.push(header(false));
        }
        let current = datagrams.last_mut().expect("never empty");
        if current.len() + encoded.len() <= max_len {
            current.extend_from_slice(&encoded);
        }
    }
    datagrams
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    #[error("sync datagram too short")]
    TooShort,
    #[error("undecodable member in sync datagram: {0}")]
    Decode(#[from] postcard::Error),
}

/// Reads one sync datagram (plaintext, after the tag): whether it asks for a reply, and its
/// members.
pub(super) fn decode(body: &[u8]) -> Result<(bool, Vec<Member<PeerId>>), SyncError> {
    let (&reply, mut rest) = body.split_first().ok_or(SyncError::TooShort)?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let (member, tail) = postcard::take_from_bytes::<Member<PeerId>>(rest)?;
        members.push(member);
        rest = tail;
    }
    Ok((reply != 0, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u16) -> Member<PeerId> {
        Member::alive(PeerId {
            name: format!("peer-{i}"),
            cluster: format!("cluster-{i}"),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
            epoch: 1_700_000_000_000 + u64::from(i),
        })
    }

    #[test]
    fn a_large_table_is_split_into_datagrams_that_fit_and_read_back_whole() {
        let members: Vec<_> = (0..500).map(member).collect();
        let datagrams = encode(members.iter(), true, 1300);
        assert!(
            datagrams.len() > 10,
            "500 members cannot fit in a few datagrams"
        );
        let mut read = Vec::new();
        for (i, datagram) in datagrams.iter().enumerate() {
            assert!(datagram.len() <= 1300);
            assert_eq!(datagram[0], SYNC_TAG);
            let (reply, members) = decode(&datagram[1..]).expect("decodes");
            assert_eq!(reply, i == 0, "only the first datagram asks for a reply");
            read.extend(members);
        }
        assert_eq!(read, members);
    }

    #[test]
    fn an_empty_table_still_asks_for_a_reply() {
        let datagrams = encode(std::iter::empty(), true, 1300);
        assert_eq!(datagrams, vec![vec![SYNC_TAG, 1]]);
        assert_eq!(decode(&datagrams[0][1..]).expect("decodes"), (true, vec![]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0, 0xff, 0xff, 0xff]).is_err());
    }
}
