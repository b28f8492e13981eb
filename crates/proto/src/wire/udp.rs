//! The UDP request header of RFC 1928 section 7:
//! `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.
//!
//! A datagram is complete or it is nothing: here [`Error::Truncated`] means
//! a malformed datagram, never "wait for more".

use super::{Error, TargetAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// Fragment number; 0 is a whole datagram. We neither send nor accept
    /// fragments (the RFC allows dropping them).
    pub frag: u8,
    pub dst: TargetAddr,
}

impl UdpHeader {
    pub fn new(dst: TargetAddr) -> UdpHeader {
        UdpHeader { frag: 0, dst }
    }

    /// Parses the header; returns it and the offset where the payload starts.
    pub fn parse(datagram: &[u8]) -> Result<(UdpHeader, usize), Error> {
        let [rsv0, rsv1, frag, ..] = *datagram else { return Err(Error::Truncated) };
        if rsv0 != 0 || rsv1 != 0 {
            return Err(Error::Malformed("reserved bytes of UDP header are not zero"));
        }
        let (dst, used) = TargetAddr::parse(&datagram[3..])?;
        Ok((UdpHeader { frag, dst }, 3 + used))
    }

    pub fn encoded_len(&self) -> usize {
        3 + self.dst.encoded_len()
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, self.frag]);
        self.dst.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_with_payload() {
        let mut dgram = Vec::new();
        UdpHeader::new(TargetAddr::Ip("10.1.2.3:53".parse().unwrap())).emit(&mut dgram);
        dgram.extend_from_slice(b"query");
        assert_eq!(&dgram[..10], &[0, 0, 0, 1, 10, 1, 2, 3, 0, 53]);
        let (h, off) = UdpHeader::parse(&dgram).unwrap();
        assert_eq!((h.frag, &dgram[off..]), (0, &b"query"[..]));
    }

    #[test]
    fn bad_headers() {
        assert!(matches!(UdpHeader::parse(&[0, 1, 0, 1, 1, 1, 1, 1, 0, 0]), Err(Error::Malformed(_))));
        assert_eq!(UdpHeader::parse(&[0, 0, 0, 1, 1]), Err(Error::Truncated));
        assert_eq!(UdpHeader::parse(&[0, 0, 7, 1, 1, 1, 1, 1, 0, 0]).unwrap().0.frag, 7);
    }
}
