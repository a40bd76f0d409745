"""The pure core: detection, the endpoint book, the tunnel lifecycle, forward specs, SOCKS
parsing. No asyncio, no sockets, no files, no clock reads: callers pass time and bytes in."""
