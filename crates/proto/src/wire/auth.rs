//! Username/password authentication, RFC 1929.

use super::Error;

/// Version of the subnegotiation (RFC 1929 section 2), not of SOCKS.
pub const VERSION: u8 = 1;

/// `VER ULEN UNAME PLEN PASSWD`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub user: Vec<u8>,
    pub pass: Vec<u8>,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password, even in a debug log.
        f.debug_struct("AuthRequest").field("user", &String::from_utf8_lossy(&self.user)).finish_non_exhaustive()
    }
}

impl AuthRequest {
    pub fn parse(buf: &[u8]) -> Result<(AuthRequest, usize), Error> {
        let [ver, ulen, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("not username/password version 1"));
        }
        let ulen = ulen as usize;
        let user = buf.get(2..2 + ulen).ok_or(Error::Truncated)?;
        let plen = *buf.get(2 + ulen).ok_or(Error::Truncated)? as usize;
        let end = 3 + ulen + plen;
        let pass = buf.get(3 + ulen..end).ok_or(Error::Truncated)?;
        Ok((AuthRequest { user: user.to_vec(), pass: pass.to_vec() }, end))
    }

    /// Whether both fields fit the one-byte lengths of the format.
    pub fn is_encodable(&self) -> bool {
        self.user.len() <= 255 && self.pass.len() <= 255
    }

    /// Panics on a field over 255 bytes; check [`is_encodable`](Self::is_encodable).
    pub fn emit(&self, out: &mut Vec<u8>) {
        assert!(self.is_encodable(), "credential lengths checked by the config parser");
        out.extend_from_slice(&[VERSION, self.user.len() as u8]);
        out.extend_from_slice(&self.user);
        out.push(self.pass.len() as u8);
        out.extend_from_slice(&self.pass);
    }
}

/// `VER STATUS`; status 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReply {
    pub status: u8,
}

impl AuthReply {
    pub const LEN: usize = 2;

    pub fn parse(buf: &[u8]) -> Result<(AuthReply, usize), Error> {
        let [ver, status, ..] = *buf else { return Err(Error::Truncated) };
        if ver != VERSION {
            return Err(Error::Malformed("auth reply is not version 1"));
        }
        Ok((AuthReply { status }, Self::LEN))
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.status]);
    }

    pub fn succeeded(&self) -> bool {
        self.status == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_prefixes_are_truncated() {
        let bytes = [1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'];
        let (req, n) = AuthRequest::parse(&bytes).unwrap();
        assert_eq!((req.user.as_slice(), req.pass.as_slice(), n), (&b"alice"[..], &b"pw"[..], 10));
        let mut out = Vec::new();
        req.emit(&mut out);
        assert_eq!(out, bytes);
        for k in 0..bytes.len() {
            assert_eq!(AuthRequest::parse(&bytes[..k]), Err(Error::Truncated));
        }
        assert!(!format!("{req:?}").contains("pw"));
    }

    #[test]
    fn replies() {
        assert!(AuthReply::parse(&[1, 0]).unwrap().0.succeeded());
        assert!(!AuthReply::parse(&[1, 1]).unwrap().0.succeeded());
        assert!(matches!(AuthReply::parse(&[5, 0]), Err(Error::Malformed(_))));
        assert_eq!(AuthReply::parse(&[1]), Err(Error::Truncated));
    }
}
