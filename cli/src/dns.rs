//! `hansa dns query NAME [TYPE]`: one question to a DNS server (Hansa's by default), over
//! UDP with EDNS, retried over TCP when the answer comes back truncated.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The zone `hansa dev` serves; relative names are completed with it.
const DEFAULT_ZONE: &str = "hansa.internal.";

#[derive(Subcommand)]
pub enum DnsCommand {
    /// Ask one question and print the answer, authority and additional sections.
    Query {
        /// A name; without a trailing dot and outside the zone, `hansa.internal.` is appended
        /// (`web.default.svc` -> `web.default.svc.hansa.internal.`).
        name: String,
        /// A, AAAA, SRV, TXT, SOA, NS, ANY, ...
        #[arg(default_value = "A")]
        qtype: String,
        /// The DNS server: `hansa dev` prints its address.
        #[arg(long, env = "HANSA_DNS", default_value = "127.0.0.1:8600")]
        server: SocketAddr,
        /// Ask over TCP from the start.
        #[arg(long)]
        tcp: bool,
        /// Send an EDNS Client Subnet option for this address (answers ordered as for a
        /// client there).
        #[arg(long)]
        subnet: Option<IpAddr>,
        #[arg(long, default_value_t = 3)]
        timeout_seconds: u64,
    },
}

pub async fn run(command: DnsCommand) -> anyhow::Result<()> {
    let DnsCommand::Query {
        name,
        qtype,
        server,
        tcp,
        subnet,
        timeout_seconds,
    } = command;
    let name = qualify(&name)?;
    let qtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .with_context(|| format!("{qtype:?} is not a record type"))?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(address) = subnet {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(address, prefix, 0)));
    }
    message.set_edns(edns);
    let request = message.to_vec().context("encode the query")?;
    let limit = Duration::from_secs(timeout_seconds);

    let mut over = "UDP";
    let mut response = if tcp {
        over = "TCP";
        ask_tcp(server, &request, limit).await?
    } else {
        ask_udp(server, &request, limit).await?
    };
    if response.metadata.truncation && !tcp {
        println!(";; truncated over UDP, retrying over TCP");
        over = "TCP";
        response = ask_tcp(server, &request, limit).await?;
    }
    if response.metadata.id != message.metadata.id {
        bail!(
            "{server} answered another question (id {})",
            response.metadata.id
        );
    }
    print(&response, server, over);
    Ok(())
}

fn qualify(name: &str) -> anyhow::Result<Name> {
    let mut parsed =
        Name::from_str(name).with_context(|| format!("{name:?} is not a domain name"))?;
    if !parsed.is_fqdn() {
        let zone = Name::from_str(DEFAULT_ZONE).context("the default zone")?;
        parsed = if zone.zone_of(&parsed) {
            parsed
        } else {
            parsed.append_domain(&zone).context("name too long")?
        };
        parsed.set_fqdn(true);
    }
    Ok(parsed)
}

async fn ask_udp(server: SocketAddr, request: &[u8], limit: Duration) -> anyhow::Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local).await.context("bind a UDP socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connect to {server}"))?;
    socket
        .send(request)
        .await
        .with_context(|| format!("send to {server}"))?;
    let mut buffer = vec![0u8; 65535];
    let len = tokio::time::timeout(limit, socket.recv(&mut buffer))
        .await
        .with_context(|| format!("no answer from {server} over UDP within {limit:?}"))?
        .with_context(|| format!("receive from {server}"))?;
    Message::from_vec(&buffer[..len]).with_context(|| format!("{server} sent a malformed answer"))
}

async fn ask_tcp(server: SocketAddr, request: &[u8], limit: Duration) -> anyhow::Result<Message> {
    let exchange = async {
        let mut stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connect to {server} over TCP"))?;
        let len = u16::try_from(request.len()).context("query too long")?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(request).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buffer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buffer).await?;
        Message::from_vec(&buffer).with_context(|| format!("{server} sent a malformed answer"))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .with_context(|| format!("no answer from {server} over TCP within {limit:?}"))?
}

fn print(response: &Message, server: SocketAddr, over: &str) {
    let m = &response.metadata;
    let mut flags = Vec::new();
    for (set, flag) in [
        (m.authoritative, "aa"),
        (m.truncation, "tc"),
        (m.recursion_desired, "rd"),
        (m.recursion_available, "ra"),
    ] {
        if set {
            flags.push(flag);
        }
    }
    println!(
        ";; status: {}, flags: {}; answer: {}, authority: {}, additional: {}",
        rcode(response),
        flags.join(" "),
        response.answers.len(),
        response.authorities.len(),
        response.additionals.len()
    );
    for (title, records) in [
        ("ANSWER", &response.answers),
        ("AUTHORITY", &response.authorities),
        ("ADDITIONAL", &response.additionals),
    ] {
        if records.is_empty() {
            continue;
        }
        println!();
        println!(";; {title} SECTION:");
        for record in records.iter() {
            println!("{record}");
        }
    }
    println!();
    println!(";; SERVER: {server} ({over})");
}

fn rcode(response: &Message) -> String {
    use hickory_proto::op::ResponseCode::*;
    match response.metadata.response_code {
        NoError => "NOERROR".into(),
        NXDomain => "NXDOMAIN".into(),
        ServFail => "SERVFAIL".into(),
        Refused => "REFUSED".into(),
        FormErr => "FORMERR".into(),
        NotImp => "NOTIMP".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}
