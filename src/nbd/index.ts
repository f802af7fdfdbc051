export { NbdClient } from './client.js';
export type { ConnectOptions, ServerAddress, ReadOptions, RequestSignalOption, WriteOptions, WriteZeroesOptions } from './client.js';
export { NbdError, NbdOptionError, NbdProtocolError, NbdConnectionError, NbdTimeoutError } from './errors.js';
export type { Extent, ByteRange } from './extents.js';
export type { ReadChunk, ReadStreamOptions } from './stream.js';
export type { ReadSink } from './connection.js';
export type { BlockSizeLimits, ExportListing } from './handshake.js';
export type { NbdTlsOptions, NbdTlsRelay, TlsRelayRequest } from './tls.js';
export { AllocationFlags, BASE_ALLOCATION, CommandFlags, DirtyBitmapFlags, TransmissionFlags } from './protocol.js';
