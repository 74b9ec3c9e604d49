import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { derivedInstanceName, overlaps, parseCidr, subnetOf, vethName } from './instance.js';

describe('instance names and subnets', () => {
  it('parses ranges and refuses ones that do not start their block', () => {
    assert.deepEqual(parseCidr('10.214.16.0/20'), { first: 0x0ad61000, last: 0x0ad61fff, bits: 20, text: '10.214.16.0/20' });
    assert.equal(parseCidr('169.254.169.254').bits, 32);
    assert.throws(() => parseCidr('10.214.17.0/20'), /did you mean 10\.214\.16\.0\/20/);
    assert.throws(() => parseCidr('10.300.0.0/16'), /not an IPv4 address/);
    assert.throws(() => parseCidr('10.0.0.0/33'), /not an IPv4 CIDR/);
  });

  it('tells overlapping ranges apart', () => {
    assert.equal(overlaps(parseCidr('10.213.0.0/16'), parseCidr('10.213.5.0/24')), true);
    assert.equal(overlaps(parseCidr('10.213.0.0/16'), parseCidr('10.214.0.0/20')), false);
  });

  it('gives a subnet its gateway and host count', () => {
    const subnet = subnetOf('10.214.16.0/20');
    assert.equal(subnet.gateway, '10.214.16.1');
    assert.equal(subnet.hosts, 4094);
    assert.throws(() => subnetOf('10.0.0.0/30'), /between \/8 and \/28/);
  });

  it('keeps the default names for the default instance and scopes the others', () => {
    assert.equal(vethName({ name: 'default' }, 'sb_x'), vethName({ name: 'default' }, 'sb_x'));
    assert.notEqual(vethName({ name: 'default' }, 'sb_x'), vethName({ name: 'i1234567' }, 'sb_x'));
    assert.match(vethName({ name: 'i1234567' }, 'sb_x'), /^rv[0-9a-f]{12}$/);
    assert.match(derivedInstanceName('/tmp/a'), /^i[0-9a-f]{7}$/);
    assert.notEqual(derivedInstanceName('/tmp/a'), derivedInstanceName('/tmp/b'));
  });
});
