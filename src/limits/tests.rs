use super::*;

#[test]
fn a_user_gets_the_minute_at_once_then_429_with_retry_after() {
    let limits = RateLimits::new(3, 0, false);
    for _ in 0..3 {
        limits.check_write(7).expect("within the limit");
    }
    match limits.check_write(7) {
        Err(ApiError::TooManyRequests { retry_after_secs }) => {
            // One request per 20 s comes back.
            assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    limits
        .check_write(8)
        .expect("another user has its own allowance");
}

#[test]
fn zero_disables_a_limit() {
    let limits = RateLimits::new(0, 0, false);
    let client = Client {
        peer: Some("10.0.0.1".parse().unwrap()),
        forwarded_for: None,
    };
    for _ in 0..1000 {
        limits.check_write(1).unwrap();
        limits.check_auth(client).unwrap();
    }
}

/// A client at `peer` (`ip:port`) whose last `X-Forwarded-For` line is the last of
/// `lines`.
fn forwarded(peer: &str, lines: &[&'static str]) -> Client<'static> {
    Client {
        peer: Some(peer.parse::<SocketAddr>().unwrap().ip()),
        forwarded_for: lines.last().map(|l| l.as_bytes()),
    }
}

#[test]
fn client_address_is_the_peer_unless_forwarded_for_is_trusted() {
    let req = || forwarded("10.0.0.1:5000", &["203.0.113.9, 198.51.100.7"]);
    let direct = RateLimits::new(0, 1, false);
    assert_eq!(
        direct.client_addr(req()).unwrap(),
        Some("10.0.0.1".parse().unwrap())
    );
    direct.check_auth(req()).unwrap();
    assert!(
        direct.check_auth(req()).is_err(),
        "same peer, second attempt"
    );

    let proxied = RateLimits::new(0, 1, true);
    // The last hop is the one the trusted proxy appended.
    assert_eq!(
        proxied.client_addr(req()).unwrap(),
        Some("198.51.100.7".parse().unwrap())
    );
    proxied.check_auth(req()).unwrap();
    proxied
        .check_auth(forwarded("10.0.0.1:5000", &["198.51.100.8"]))
        .expect("a different client behind the same proxy");
    assert!(proxied.check_auth(req()).is_err());
    // No header at all (a caller that bypasses the proxy): the peer.
    assert_eq!(
        proxied
            .client_addr(forwarded("10.0.0.2:5000", &[]))
            .unwrap(),
        Some("10.0.0.2".parse().unwrap())
    );
}

#[test]
fn the_appended_hop_is_read_in_every_form() {
    let proxied = RateLimits::new(0, 1, true);
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    for (lines, want) in [
        (
            vec!["1.2.3.4, 198.51.100.7:41234"],
            "198.51.100.7".parse().unwrap(),
        ),
        (
            vec!["1.2.3.4,198.51.100.7"],
            "198.51.100.7".parse().unwrap(),
        ),
        (vec!["1.2.3.4, [2001:db8::7]:443"], v6),
        (vec!["1.2.3.4, [2001:db8::7]"], v6),
        (vec!["1.2.3.4, 2001:db8::7"], v6),
        (vec!["1.2.3.4, \"[2001:db8::7]:443\""], v6),
        // A second line is appended after the first: its last entry wins.
        (
            vec!["9.9.9.9, 8.8.8.8", "198.51.100.7"],
            "198.51.100.7".parse().unwrap(),
        ),
    ] {
        let req = forwarded("10.0.0.1:5000", &lines);
        assert_eq!(proxied.client_addr(req).unwrap(), Some(want), "{lines:?}");
    }
}

#[test]
fn an_unreadable_appended_hop_is_refused_never_replaced_by_an_earlier_one() {
    let proxied = RateLimits::new(0, 1, true);
    for line in [
        "203.0.113.9, unknown",
        "203.0.113.9, ",
        "203.0.113.9, _hidden",
        "203.0.113.9, 198.51.100.7:notaport",
        "203.0.113.9, [2001:db8::7",
    ] {
        let req = forwarded("10.0.0.1:5000", &[line]);
        assert!(
            matches!(proxied.client_addr(req), Err(ApiError::BadRequest(_))),
            "{line}"
        );
        assert!(proxied.check_auth(req).is_err(), "{line}");
    }
}

#[test]
fn ipv6_clients_are_keyed_by_their_64() {
    let proxied = RateLimits::new(0, 1, true);
    proxied
        .check_auth(forwarded("10.0.0.1:5000", &["[2001:db8:1:2::1]:5000"]))
        .unwrap();
    assert!(
        proxied
            .check_auth(forwarded("10.0.0.1:5000", &["2001:db8:1:2:ffff::9"]))
            .is_err(),
        "another address of the same /64"
    );
    proxied
        .check_auth(forwarded("10.0.0.1:5000", &["2001:db8:1:3::1"]))
        .expect("the next /64 is another client");
    // An IPv4-mapped peer is the IPv4 client it stands for.
    assert_eq!(
        client_key("::ffff:192.0.2.1".parse().unwrap()),
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn forgetting_idle_keys_keeps_busy_ones() {
    let limits = RateLimits::new(2, 0, false);
    limits.check_write(1).unwrap();
    limits.check_write(1).unwrap();
    limits.forget_idle();
    assert!(
        limits.check_write(1).is_err(),
        "a limited user is not forgotten"
    );
}
