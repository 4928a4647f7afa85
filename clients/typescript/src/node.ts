// "@slop-studios/client/node": the three services over native gRPC
// (HTTP/2), for Node. Needs the optional peer dependency
// @connectrpc/connect-node; browser bundles import "." and never this.

import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Interceptor } from "@connectrpc/connect";
import { createSlopClient, interceptorsFor, type SlopClient } from "./client.js";
import type { Credentials } from "./credentials.js";

export * from "./index.js";

/** Options of connectNode. */
export interface NodeClientOptions {
  /** The API's base URL, `https://api.example.com` (gRPC shares the port). */
  baseUrl: string;
  /** A BearerSession (or nothing, for public calls). */
  credentials?: Credentials | undefined;
  /** More interceptors, after the credentials'. */
  interceptors?: Interceptor[];
}

/** The three services over gRPC (HTTP/2), for Node. */
export function connectNode(options: NodeClientOptions): SlopClient {
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [...interceptorsFor(options.credentials), ...(options.interceptors ?? [])],
  });
  return createSlopClient({ baseUrl: options.baseUrl, transport, credentials: options.credentials });
}
