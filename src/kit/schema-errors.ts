// The message of a request that fails its route's JSON schema. Fastify's default joins ajv's lines,
// which for a choice among values (a TypeBox union of literals) reads "querystring/bucket must be
// equal to constant, must be equal to constant, …, must match a schema in anyOf" and never says
// which values would do. Such a failure is said as the choice; anything else as Fastify says it.

interface SchemaError {
  instancePath?: string;
  keyword: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** `dataVar`: body, querystring, params or headers. */
export function formatSchemaErrors(errors: SchemaError[], dataVar: string): Error {
  const choice = errors.find((e) => e.keyword === 'anyOf');
  if (choice) {
    const path = choice.instancePath ?? '';
    const rest = errors.filter((e) => e !== choice);
    if (rest.every((e) => e.keyword === 'const' && (e.instancePath ?? '') === path)) {
      const values = rest.map((e) => JSON.stringify(e.params?.allowedValue));
      return new Error(`${dataVar}${path} must be one of ${values.join(', ')}`);
    }
    // A value or null (a TypeBox Union with Null, as PATCH's maxPerUser): the value's own
    // complaint, "or null", instead of three lines ending in "must match a schema in anyOf".
    const isNull = (e: SchemaError) => e.keyword === 'type' && e.params?.type === 'null';
    const value = rest.filter((e) => !isNull(e));
    if (value.length === 1 && rest.length === 2 && rest.every((e) => (e.instancePath ?? '') === path))
      return new Error(`${dataVar}${path} ${describe(value[0]!)}, or null`);
  }
  return new Error(errors.map((e) => `${dataVar}${e.instancePath ?? ''} ${describe(e)}`).join(', '));
}

/** Ajv's line, naming the property it refused where Ajv leaves it out. */
function describe(e: SchemaError): string {
  // No body, `null`, `[1]` or `5` where a route takes an object: "body must be object" said neither
  // what JSON is nor where its fields are listed.
  if (e.keyword === 'type' && !e.instancePath && e.params?.type === 'object')
    return "must be a JSON object of this route's fields (sent with Content-Type: application/json; the fields are listed at /docs)";
  const extra = e.params?.additionalProperty;
  if (e.keyword === 'additionalProperties' && typeof extra === 'string')
    return `must NOT have the property ${JSON.stringify(extra)}: it is not one of this request's fields`;
  return e.message ?? '';
}
