// An independent Salesforce client (jsforce 3) against the sandbox org.
//
// Each operation is what an integration does against a real org, checked
// against what Salesforce documents for it (the page is named next to each
// check). The script prints one JSON document: {"operations": [{name, ok,
// detail}], "passed": N, "total": M}. tests/test_jsforce.py runs it against
// `reconcile sandbox serve` and asserts every operation behaves as documented.
//
// Input (environment): SANDBOX_URL (https://127.0.0.1:PORT), SANDBOX_TOKEN (an
// access token), SANDBOX_CLIENT_ID / SANDBOX_CLIENT_SECRET (the connected
// app), SANDBOX_USERNAME / SANDBOX_PASSWORD / SANDBOX_SECURITY_TOKEN (its
// user). Node trusts the sandbox's certificate authority through
// NODE_EXTRA_CA_CERTS; certificate verification stays on.
'use strict';

const jsforce = require('jsforce');

const env = process.env;
const URL_ = env.SANDBOX_URL;
const VERSION = '62.0';
const results = [];

async function check(name, fn) {
  try {
    const detail = await fn();
    results.push({ name, ok: true, detail: detail === undefined ? '' : String(detail) });
  } catch (err) {
    const data = err && err.data ? ` data=${JSON.stringify(err.data).slice(0, 300)}` : '';
    results.push({ name, ok: false, detail: `${err && (err.errorCode || err.name)}: ${err && err.message}${data}`.slice(0, 600) });
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function refused(promise, code) {
  try {
    await promise;
  } catch (err) {
    expect(err.errorCode === code || err.name === code, `expected ${code}, got ${err.errorCode || err.name}: ${err.message}`);
    return err;
  }
  throw new Error(`expected ${code}, the call succeeded`);
}

function tokenConnection() {
  return new jsforce.Connection({ instanceUrl: URL_, accessToken: env.SANDBOX_TOKEN, version: VERSION });
}

const base = `/services/data/v${VERSION}`;

async function main() {
  const conn = tokenConnection();

  // -- sign-in -------------------------------------------------------------------------
  // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_username_password_flow.htm
  await check('login: OAuth username-password', async () => {
    const c = new jsforce.Connection({
      version: VERSION, loginUrl: URL_,
      oauth2: { clientId: env.SANDBOX_CLIENT_ID, clientSecret: env.SANDBOX_CLIENT_SECRET, loginUrl: URL_ },
    });
    const info = await c.login(env.SANDBOX_USERNAME, env.SANDBOX_PASSWORD + env.SANDBOX_SECURITY_TOKEN);
    expect(c.accessToken && c.instanceUrl === URL_, `instanceUrl ${c.instanceUrl}`);
    expect(/^005/.test(info.id) && /^00D/.test(info.organizationId), JSON.stringify(info));
    await c.query('SELECT Id FROM Organization');
    return info.id;
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login.htm
  await check('login: SOAP login() below v65', async () => {
    const c = new jsforce.Connection({ version: VERSION, loginUrl: URL_ });
    const info = await c.login(env.SANDBOX_USERNAME, env.SANDBOX_PASSWORD + env.SANDBOX_SECURITY_TOKEN);
    expect(c.accessToken && c.instanceUrl === URL_, `instanceUrl ${c.instanceUrl}`);
    expect(/^005/.test(info.id), JSON.stringify(info));
    await c.query('SELECT Id FROM Organization');
  });
  // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
  await check('login: OAuth client credentials', async () => {
    const c = new jsforce.Connection({
      version: VERSION,
      oauth2: { clientId: env.SANDBOX_CLIENT_ID, clientSecret: env.SANDBOX_CLIENT_SECRET, loginUrl: URL_ },
    });
    await c.authorize({ grant_type: 'client_credentials' });
    expect(c.accessToken && c.instanceUrl === URL_, `instanceUrl ${c.instanceUrl}`);
    await c.query('SELECT Id FROM Organization');
  });
  // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
  await check('login: a wrong password is invalid_grant', async () => {
    const c = new jsforce.Connection({
      version: VERSION,
      oauth2: { clientId: env.SANDBOX_CLIENT_ID, clientSecret: env.SANDBOX_CLIENT_SECRET, loginUrl: URL_ },
    });
    await refused(c.login(env.SANDBOX_USERNAME, 'not-the-password'), 'invalid_grant');
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm (401)
  await check('a bad access token is INVALID_SESSION_ID', async () => {
    const c = new jsforce.Connection({ instanceUrl: URL_, accessToken: 'not-a-session', version: VERSION });
    await refused(c.query('SELECT Id FROM Contact'), 'INVALID_SESSION_ID');
  });

  // -- discovery -----------------------------------------------------------------------
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_versions.htm
  await check('versions', async () => {
    const versions = await conn.request('/services/data/');
    expect(Array.isArray(versions) && versions.some((v) => v.version === VERSION), JSON.stringify(versions).slice(0, 200));
  });
  // https://developer.salesforce.com/docs/platform/api-rest/guide/dome-discoveryresource.md
  await check('resources by version (with identity)', async () => {
    const res = await conn.request(base + '/');
    for (const key of ['sobjects', 'query', 'queryAll', 'composite', 'limits', 'jobs', 'identity']) {
      expect(typeof res[key] === 'string', `no ${key} in ${JSON.stringify(res)}`);
    }
    expect(/^https:\/\/.*\/id\/00D\w+\/005\w+$/.test(res.identity), res.identity);
  });
  // https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_openid.htm
  await check('identity', async () => {
    const id = await conn.identity();
    expect(/^005/.test(id.user_id) && /^00D/.test(id.organization_id) && id.username, JSON.stringify(id));
    expect(id.urls && typeof id.urls.rest === 'string', JSON.stringify(id.urls));
    return id.username;
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_limits.htm
  let limitsBefore;
  await check('limits', async () => {
    limitsBefore = await conn.limits();
    for (const key of ['DailyApiRequests', 'DailyBulkApiBatches', 'DailyBulkV2QueryJobs']) {
      const l = limitsBefore[key];
      expect(l && typeof l.Max === 'number' && typeof l.Remaining === 'number', `${key}: ${JSON.stringify(l)}`);
    }
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_describeGlobal.htm
  await check('describe global', async () => {
    const res = await conn.describeGlobal();
    expect(res.sobjects.some((s) => s.name === 'Contact'), 'no Contact');
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm
  await check('describe Contact', async () => {
    const res = await conn.sobject('Contact').describe();
    expect(res.name === 'Contact' && res.fields.some((f) => f.name === 'Email'), 'no Email field');
  });
  await check('describe an unknown sObject is NOT_FOUND', async () => {
    await refused(conn.describe('NoSuchThing__x'), 'NOT_FOUND');
  });

  // -- query ---------------------------------------------------------------------------
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
  await check('query', async () => {
    const res = await conn.query('SELECT Id, Email FROM Contact LIMIT 5');
    expect(res.done === true && res.records.length === res.totalSize && res.records[0].attributes.type === 'Contact',
      JSON.stringify(res).slice(0, 200));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query_more_results.htm
  let total = 0;
  // Enough records for several pages of 200 (the smallest batchSize).
  await check('collections: create 200 records in one request', async () => {
    const people = (from, n) => Array.from({ length: n }, (_, i) => ({ LastName: `Jsforce Page ${from + i}` }));
    const first = await conn.sobject('Contact').create(people(0, 200));
    const second = await conn.sobject('Contact').create(people(200, 150));
    expect(first.length === 200 && [...first, ...second].every((r) => r.success), 'not every record was created');
  });
  await check('queryMore (nextRecordsUrl)', async () => {
    const headers = { 'Sforce-Query-Options': 'batchSize=200' };
    const first = await conn.request({ method: 'GET', url: `${base}/query?q=${encodeURIComponent('SELECT Id FROM Contact')}`, headers });
    total = first.totalSize;
    expect(first.done === false && first.nextRecordsUrl, `one page of ${first.totalSize}`);
    const more = await conn.queryMore(first.nextRecordsUrl, { headers });
    expect(more.records.length > 0 && more.totalSize === first.totalSize, JSON.stringify(more).slice(0, 200));
    return `${first.totalSize} records`;
  });
  await check('query autoFetch reads every page', async () => {
    const records = [];
    await new Promise((resolve, reject) => {
      conn.query('SELECT Id FROM Contact')
        .on('record', (r) => records.push(r)).on('end', resolve).on('error', reject)
        .run({ autoFetch: true, maxFetch: 100000, headers: { 'Sforce-Query-Options': 'batchSize=200' } });
    });
    expect(records.length === total && new Set(records.map((r) => r.Id)).size === total, `${records.length} of ${total}`);
  });
  await check('a malformed query is refused with its code', async () => {
    await refused(conn.query('SELECT NoSuchField__x FROM Contact'), 'INVALID_FIELD');
  });

  // -- one record ------------------------------------------------------------------------
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_sobject_create.htm
  let oneId;
  await check('create one', async () => {
    const res = await conn.sobject('Contact').create({ LastName: 'Jsforce One', Email: 'jsforce.one@example.org' });
    expect(res.success === true && /^003/.test(res.id) && Array.isArray(res.errors) && res.errors.length === 0, JSON.stringify(res));
    oneId = res.id;
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_get_field_values.htm
  await check('retrieve one', async () => {
    const rec = await conn.sobject('Contact').retrieve(oneId);
    expect(rec.Id === oneId && rec.LastName === 'Jsforce One' && rec.attributes.type === 'Contact', JSON.stringify(rec).slice(0, 200));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
  await check('update one', async () => {
    const res = await conn.sobject('Contact').update({ Id: oneId, Title: 'Tester' });
    expect(res.success === true && res.id === oneId, JSON.stringify(res));
    const rec = await conn.sobject('Contact').retrieve(oneId, { fields: ['Title'] });
    expect(rec.Title === 'Tester', JSON.stringify(rec));
  });
  await check('create one without a required field is REQUIRED_FIELD_MISSING', async () => {
    const err = await refused(conn.sobject('Contact').create({ FirstName: 'No Last Name' }), 'REQUIRED_FIELD_MISSING');
    expect(Array.isArray(err.data.fields) && err.data.fields.includes('LastName'), JSON.stringify(err.data));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_delete_record.htm
  await check('delete one', async () => {
    const res = await conn.sobject('Contact').destroy(oneId);
    expect(res.success === true && res.id === oneId, JSON.stringify(res));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
  await check('a deleted record is ENTITY_IS_DELETED with fields', async () => {
    const err = await refused(conn.sobject('Contact').update({ Id: oneId, Title: 'x' }), 'ENTITY_IS_DELETED');
    expect(Array.isArray(err.data.fields), `no fields in ${JSON.stringify(err.data)}`);
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_queryall.htm
  await check('queryAll finds the deleted record', async () => {
    const res = await conn.query(`SELECT Id, IsDeleted FROM Contact WHERE Id = '${oneId}'`, { scanAll: true });
    expect(res.totalSize === 1 && res.records[0].IsDeleted === true, JSON.stringify(res));
  });

  // -- sObject Collections -----------------------------------------------------------------
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
  let ids = [];
  await check('collections: create with one failure', async () => {
    const res = await conn.sobject('Contact').create([
      { LastName: 'Jsforce A', Email: 'jsforce.a@example.org' },
      { FirstName: 'Jsforce no last name' },
      { LastName: 'Jsforce B', Email: 'jsforce.b@example.org' },
    ]);
    expect(res.length === 3 && res[0].success && res[2].success, JSON.stringify(res));
    expect(res[1].success === false && !res[1].id && res[1].errors[0].statusCode === 'REQUIRED_FIELD_MISSING'
      && Array.isArray(res[1].errors[0].fields), JSON.stringify(res[1]));
    ids = [res[0].id, res[2].id];
  });
  await check('collections: allOrNone rolls every record back', async () => {
    const before = (await conn.query("SELECT COUNT() FROM Contact WHERE LastName = 'Jsforce AllOrNone'")).totalSize;
    const res = await conn.sobject('Contact').create([
      { LastName: 'Jsforce AllOrNone' }, { FirstName: 'missing last name' }], { allOrNone: true });
    expect(res.every((r) => r.success === false && !r.id), JSON.stringify(res));
    expect(res[0].errors[0].statusCode === 'ALL_OR_NONE_OPERATION_ROLLED_BACK', JSON.stringify(res[0]));
    const after = (await conn.query("SELECT COUNT() FROM Contact WHERE LastName = 'Jsforce AllOrNone'")).totalSize;
    expect(after === before, `${after - before} created`);
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_retrieve.htm
  await check('collections: retrieve', async () => {
    const recs = await conn.sobject('Contact').retrieve(ids, { fields: ['Id', 'Email'] });
    expect(recs.length === 2 && recs[0].Email === 'jsforce.a@example.org', JSON.stringify(recs));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
  await check('collections: update', async () => {
    const res = await conn.sobject('Contact').update(ids.map((Id) => ({ Id, Title: 'Collected' })));
    expect(res.every((r) => r.success) && res.map((r) => r.id).join() === ids.join(), JSON.stringify(res));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_delete.htm
  await check('collections: delete', async () => {
    const res = await conn.sobject('Contact').destroy(ids);
    expect(res.every((r) => r.success) && res.map((r) => r.id).join() === ids.join(), JSON.stringify(res));
  });

  // -- composite -------------------------------------------------------------------------
  // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm
  await check('composite: GET subrequests', async () => {
    const res = await conn.requestPost(`${base}/composite`, {
      compositeRequest: [
        { method: 'GET', url: `${base}/query?q=SELECT+Id+FROM+Organization`, referenceId: 'org' },
        { method: 'GET', url: `${base}/limits`, referenceId: 'limits' },
      ],
    });
    expect(res.compositeResponse.length === 2 && res.compositeResponse.every((r) => r.httpStatusCode === 200), JSON.stringify(res).slice(0, 300));
  });
  let compositeContact;
  await check('composite: write subrequests with references', async () => {
    const res = await conn.requestPost(`${base}/composite`, {
      allOrNone: false,
      compositeRequest: [
        { method: 'POST', url: `${base}/sobjects/Account`, referenceId: 'acct', body: { Name: 'Jsforce Composite Co' } },
        { method: 'POST', url: `${base}/sobjects/Contact`, referenceId: 'person',
          body: { LastName: 'Composite', AccountId: '@{acct.id}' } },
        { method: 'PATCH', url: `${base}/sobjects/Contact/@{person.id}`, referenceId: 'edit', body: { Title: 'Composed' } },
        { method: 'GET', url: `${base}/sobjects/Contact/@{person.id}?fields=AccountId,Title`, referenceId: 'read' },
      ],
    });
    const byRef = Object.fromEntries(res.compositeResponse.map((r) => [r.referenceId, r]));
    expect(byRef.acct.httpStatusCode === 201 && byRef.acct.body.success === true, JSON.stringify(byRef.acct));
    expect(byRef.person.httpStatusCode === 201, JSON.stringify(byRef.person));
    expect(byRef.edit.httpStatusCode === 204, JSON.stringify(byRef.edit));
    expect(byRef.read.body.AccountId === byRef.acct.body.id && byRef.read.body.Title === 'Composed', JSON.stringify(byRef.read));
    compositeContact = byRef.person.body.id;
  });
  await check('composite: allOrNone failure rolls back and answers per subrequest', async () => {
    const res = await conn.requestPost(`${base}/composite`, {
      allOrNone: true,
      compositeRequest: [
        { method: 'POST', url: `${base}/sobjects/Contact`, referenceId: 'good', body: { LastName: 'Jsforce Rolled Back' } },
        { method: 'POST', url: `${base}/sobjects/Contact`, referenceId: 'bad', body: { FirstName: 'no last name' } },
      ],
    });
    const byRef = Object.fromEntries(res.compositeResponse.map((r) => [r.referenceId, r]));
    expect(byRef.bad.httpStatusCode === 400 && byRef.bad.body[0].errorCode === 'REQUIRED_FIELD_MISSING', JSON.stringify(byRef.bad));
    expect(byRef.good.httpStatusCode === 400 && byRef.good.body[0].errorCode === 'PROCESSING_HALTED', JSON.stringify(byRef.good));
    const left = await conn.query("SELECT COUNT() FROM Contact WHERE LastName = 'Jsforce Rolled Back'");
    expect(left.totalSize === 0, `${left.totalSize} records were kept`);
  });
  await check('composite: DELETE subrequest', async () => {
    const res = await conn.requestPost(`${base}/composite`, {
      compositeRequest: [{ method: 'DELETE', url: `${base}/sobjects/Contact/${compositeContact}`, referenceId: 'gone' }],
    });
    expect(res.compositeResponse[0].httpStatusCode === 204, JSON.stringify(res));
  });

  // -- Bulk API 2.0 --------------------------------------------------------------------------
  conn.bulk2.pollInterval = 200;
  conn.bulk2.pollTimeout = 20000;
  let bulkIds = [];
  // https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/walkthrough_upload_data.htm
  await check('bulk2: ingest insert (streamed upload)', async () => {
    const csv = 'LastName,Email\nBulk One,bulk.one@example.org\nBulk Two,bulk.two@example.org\n,no.last.name@example.org\n';
    const res = await conn.bulk2.loadAndWaitForResults({ object: 'Contact', operation: 'insert', input: csv });
    expect(res.successfulResults.length === 2 && res.failedResults.length === 1,
      `${res.successfulResults.length} ok, ${res.failedResults.length} failed`);
    expect(res.failedResults[0].sf__Error.startsWith('REQUIRED_FIELD_MISSING'), res.failedResults[0].sf__Error);
    bulkIds = res.successfulResults.map((r) => r.sf__Id);
  });
  await check('bulk2: ingest update', async () => {
    const res = await conn.bulk2.loadAndWaitForResults({
      object: 'Contact', operation: 'update', input: bulkIds.map((Id) => ({ Id, Title: 'Bulked' })),
    });
    expect(res.successfulResults.length === bulkIds.length, JSON.stringify(res).slice(0, 300));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_create_job.htm
  await check('bulk2: query', async () => {
    const stream = await conn.bulk2.query("SELECT Id, Title FROM Contact WHERE Title = 'Bulked'");
    const rows = await stream.toArray();
    expect(rows.length === bulkIds.length && rows.every((r) => r.Title === 'Bulked'), JSON.stringify(rows).slice(0, 300));
  });
  await check('bulk2: ingest delete', async () => {
    const res = await conn.bulk2.loadAndWaitForResults({
      object: 'Contact', operation: 'delete', input: bulkIds.map((Id) => ({ Id })),
    });
    expect(res.successfulResults.length === bulkIds.length, JSON.stringify(res).slice(0, 300));
  });
  // https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_limits.htm
  await check('limits move with use (API requests, bulk batches, bulk query jobs)', async () => {
    const after = await conn.limits();
    const used = (key) => limitsBefore[key].Remaining - after[key].Remaining;
    expect(used('DailyApiRequests') > 0, `DailyApiRequests used ${used('DailyApiRequests')}`);
    expect(used('DailyBulkApiBatches') >= 3, `DailyBulkApiBatches used ${used('DailyBulkApiBatches')}`);
    expect(used('DailyBulkV2QueryJobs') >= 1, `DailyBulkV2QueryJobs used ${used('DailyBulkV2QueryJobs')}`);
  });
}

main().then(() => {
  const passed = results.filter((r) => r.ok).length;
  process.stdout.write(JSON.stringify({ operations: results, passed, total: results.length }, null, 1) + '\n');
}, (err) => {
  process.stderr.write(`check.js crashed: ${err && err.stack}\n`);
  process.exit(2);
});
