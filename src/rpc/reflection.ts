/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), answered from the file descriptors
 * embedded in generated code, so grpcurl, buf curl and similar tools can discover the API without
 * local .proto files. Owns the descriptor index and the two ServerReflection services.
 */
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import type { DescriptorProto, EnumDescriptorProto, FieldDescriptorProto } from "@bufbuild/protobuf/wkt";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { ServerReflection as ServerReflectionV1 } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** A reflection request, independent of the protocol version it arrived in. */
export type ReflectionQuestion =
  | { case: "fileByFilename"; value: string }
  | { case: "fileContainingSymbol"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: "allExtensionNumbersOfType"; value: string }
  | { case: "listServices"; value: string }
  | { case: undefined; value?: undefined };

/** A reflection answer, independent of the protocol version it leaves in. */
export type ReflectionAnswer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * Everything reflection can tell about a set of services: their names, the files that define them
 * and every file those import, and each fully-qualified symbol declared in those files.
 */
export class DescriptorIndex {
  readonly #serviceNames: string[];
  readonly #files = new Map<string, DescFile>();
  readonly #encoded = new Map<DescFile, Uint8Array>();
  readonly #symbols = new Map<string, DescFile>();
  readonly #messages = new Set<string>();
  readonly #extensions = new Map<string, Map<number, DescFile>>();

  /** Indexes `services`, the files declaring them and those files' transitive imports. */
  constructor(services: readonly DescService[]) {
    this.#serviceNames = [...new Set(services.map((service) => service.typeName))].sort();
    for (const service of services) {
      this.#addFile(service.file);
    }
  }

  /** Answers one reflection request. Unknown names get a NOT_FOUND error answer. */
  answer(question: ReflectionQuestion): ReflectionAnswer {
    switch (question.case) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: this.#serviceNames.map((name) => ({ name })) },
        };
      case "fileByFilename": {
        const file = this.#files.get(question.value);
        return file ? this.#filesAnswer(file) : notFound(`file "${question.value}" not found`);
      }
      case "fileContainingSymbol": {
        const file = this.#symbols.get(stripDot(question.value));
        return file ? this.#filesAnswer(file) : notFound(`symbol "${question.value}" not found`);
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = question.value;
        const file = this.#extensions.get(stripDot(containingType))?.get(extensionNumber);
        return file
          ? this.#filesAnswer(file)
          : notFound(`extension ${extensionNumber} of "${containingType}" not found`);
      }
      case "allExtensionNumbersOfType": {
        const typeName = stripDot(question.value);
        if (!this.#messages.has(typeName)) {
          return notFound(`message type "${question.value}" not found`);
        }
        const numbers = [...(this.#extensions.get(typeName)?.keys() ?? [])].sort((a, b) => a - b);
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: typeName, extensionNumber: numbers },
        };
      }
      default:
        return {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "request sets no message_request" },
        };
    }
  }

  #filesAnswer(file: DescFile): ReflectionAnswer {
    const ordered: DescFile[] = [];
    const visit = (current: DescFile): void => {
      if (ordered.includes(current)) return;
      ordered.push(current);
      for (const dependency of current.dependencies) visit(dependency);
    };
    visit(file);
    return {
      case: "fileDescriptorResponse",
      value: { fileDescriptorProto: ordered.map((f) => this.#encode(f)) },
    };
  }

  #encode(file: DescFile): Uint8Array {
    let bytes = this.#encoded.get(file);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.#encoded.set(file, bytes);
    }
    return bytes;
  }

  #addFile(file: DescFile): void {
    const proto = file.proto;
    if (this.#files.has(proto.name)) return;
    this.#files.set(proto.name, file);
    const scope = proto.package ? `${proto.package}.` : "";
    for (const service of proto.service) {
      const serviceName = scope + service.name;
      this.#symbols.set(serviceName, file);
      for (const method of service.method) {
        this.#symbols.set(`${serviceName}.${method.name}`, file);
      }
    }
    for (const message of proto.messageType) this.#addMessage(file, scope, message);
    for (const enumType of proto.enumType) this.#addEnum(file, scope, enumType);
    for (const extension of proto.extension) this.#addExtension(file, scope, extension);
    for (const dependency of file.dependencies) this.#addFile(dependency);
  }

  #addMessage(file: DescFile, scope: string, message: DescriptorProto): void {
    const typeName = scope + message.name;
    this.#symbols.set(typeName, file);
    this.#messages.add(typeName);
    const inner = `${typeName}.`;
    for (const field of message.field) this.#symbols.set(inner + field.name, file);
    for (const oneof of message.oneofDecl) this.#symbols.set(inner + oneof.name, file);
    for (const nested of message.nestedType) this.#addMessage(file, inner, nested);
    for (const enumType of message.enumType) this.#addEnum(file, inner, enumType);
    for (const extension of message.extension) this.#addExtension(file, inner, extension);
  }

  /** Enum values are scoped as siblings of their enum, as in protobuf's own name resolution. */
  #addEnum(file: DescFile, scope: string, enumType: EnumDescriptorProto): void {
    this.#symbols.set(scope + enumType.name, file);
    for (const value of enumType.value) this.#symbols.set(scope + value.name, file);
  }

  #addExtension(file: DescFile, scope: string, extension: FieldDescriptorProto): void {
    this.#symbols.set(scope + extension.name, file);
    const extendee = stripDot(extension.extendee);
    let byNumber = this.#extensions.get(extendee);
    if (!byNumber) {
      byNumber = new Map();
      this.#extensions.set(extendee, byNumber);
    }
    byNumber.set(extension.number, file);
  }
}

/**
 * Serves grpc.reflection.v1 and grpc.reflection.v1alpha ServerReflection on `router`, describing
 * `services` plus both reflection services. Each request on the bidi stream is answered as it
 * arrives; unknown names get an error_response and the stream stays open.
 */
export function registerReflection(router: ConnectRouter, services: readonly DescService[]): ConnectRouter {
  const index = new DescriptorIndex([...services, ServerReflectionV1, ServerReflectionV1alpha]);
  router.service(ServerReflectionV1, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request.messageRequest),
        };
      }
    },
  });
  router.service(ServerReflectionV1alpha, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request.messageRequest),
        };
      }
    },
  });
  return router;
}

function notFound(errorMessage: string): ReflectionAnswer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage } };
}

function stripDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}
