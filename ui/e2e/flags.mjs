// Debian chromium as root on these machines (see PLATFORM.md): no sandbox, no GPU, and none of
// the background traffic that dials hosts the network refuses.
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
