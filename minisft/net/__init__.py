"""The network layer under the runtime: netlink addresses (`link`), ARP/NDP frames (`arp`,
`ndp`, pure) and the per-interface probe/announce/conflict watcher (`neighbour`)."""
