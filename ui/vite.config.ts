import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `make ui-dev`: hot reload on :5173, the API proxied to the gateway of `make run`, so the
// browser still sees one origin.
const gateway = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.MLMESH_GATEWAY_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  server: {
    host: "127.0.0.1",
    port: 5173,
    proxy: { "/api": { target: gateway, changeOrigin: false } },
  },
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
