// The AWS SDK for JavaScript v3, with its defaults, driven from tests/e2e/test_client_matrix.py.
//
//   node driver.mjs COMMAND ARGS...     (endpoint and credentials from S3_ENDPOINT,
//                                        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_BUCKET)
//
// Each command prints one JSON object on stdout.  A failure prints
// {"error": name, "code": S3 error code, "status": HTTP status, "message": ...}
// on stderr and exits 1, so the test shows the S3 error code.
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";

const bucket = process.env.S3_BUCKET;
const client = new S3Client({
  endpoint: process.env.S3_ENDPOINT,
  region: "us-east-1",
  forcePathStyle: true, // a custom endpoint on 127.0.0.1 has no per-bucket host names
  maxAttempts: 1, // a failure must show the gateway's error, not be retried into a timeout
});

function checksums(response) {
  const out = {};
  for (const name of ["ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"]) {
    if (response[name]) out[name] = response[name];
  }
  return out;
}

const commands = {
  // PutObject of an in-memory Buffer: the SDK adds x-amz-checksum-crc32 by default.
  async put(key, file) {
    const r = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: readFileSync(file) }));
    return { etag: r.ETag, checksums: checksums(r) };
  },
  // PutObject of a file stream: aws-chunked with a trailing CRC32 checksum.
  async "put-stream"(key, file) {
    const r = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(file) }));
    return { etag: r.ETag, checksums: checksums(r) };
  },
  // lib-storage Upload of a stream (multipart above its 5 MiB part size).
  async upload(key, file) {
    const upload = new Upload({ client, params: { Bucket: bucket, Key: key, Body: createReadStream(file) } });
    const r = await upload.done();
    return { etag: r.ETag, checksums: checksums(r) };
  },
  // GetObject with the SDK's default response checksum validation, body to a file.
  async get(key, out) {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: "ENABLED" }));
    await pipeline(r.Body, createWriteStream(out));
    return { etag: r.ETag, length: r.ContentLength, checksums: checksums(r) };
  },
  async head(key) {
    const r = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: "ENABLED" }));
    return { etag: r.ETag, length: r.ContentLength, checksums: checksums(r), metadata: r.Metadata };
  },
  async list(prefix) {
    const keys = [];
    let token;
    do {
      const r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 2 }),
      );
      for (const o of r.Contents ?? []) keys.push(o.Key);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return { keys };
  },
  async copy(source, target) {
    const r = await client.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: target,
        CopySource: `${bucket}/${source.split("/").map(encodeURIComponent).join("/")}`,
      }),
    );
    return { etag: r.CopyObjectResult?.ETag };
  },
  async "delete-many"(...keys) {
    const r = await client.send(
      new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }),
    );
    return { deleted: (r.Deleted ?? []).map((d) => d.Key), errors: r.Errors ?? [] };
  },
};

const [command, ...args] = process.argv.slice(2);
try {
  if (!commands[command]) throw new Error(`unknown command ${command}`);
  process.stdout.write(JSON.stringify(await commands[command](...args)) + "\n");
} catch (err) {
  process.stderr.write(
    JSON.stringify({
      error: err.name,
      code: err.Code ?? err.code,
      status: err.$metadata?.httpStatusCode,
      message: err.message,
    }) + "\n",
  );
  process.exit(1);
}
