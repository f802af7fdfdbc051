// The public surface of the package as text: every name each entry point exports,
// with its kind and its type as the compiler sees it. The committed report
// (api/public-api.txt) is compared with the code by the tests, so a change to the
// public API is always a deliberate one: `npm run api:update` rewrites the report.
//
// Types are printed by the compiler, not copied from the source, so moving a file or
// reformatting code leaves the report as it was; only what users can see counts.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const REPORT_PATH = fileURLToPath(new URL('../api/public-api.txt', import.meta.url));

/** Package entry point -> its source module, as package.json's "exports" map them. */
export const ENTRY_POINTS: Record<string, string> = {
  'libvirt-backup': 'src/index.ts',
  'libvirt-backup/xml': 'src/xml/index.ts',
  'libvirt-backup/nbd': 'src/nbd/index.ts',
  'libvirt-backup/backup': 'src/backup/index.ts',
};

const FORMAT = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.WriteArrowStyleSignature | ts.TypeFormatFlags.UseAliasDefinedOutsideCurrentScope;

export function apiReport(): string {
  const configPath = ts.findConfigFile(ROOT, ts.sys.fileExists, 'tsconfig.json')!;
  const config = ts.parseJsonConfigFileContent(ts.readConfigFile(configPath, ts.sys.readFile).config, ts.sys, ROOT);
  const program = ts.createProgram(
    Object.values(ENTRY_POINTS).map((file) => `${ROOT}${file}`),
    { ...config.options, noEmit: true },
  );
  const checker = program.getTypeChecker();
  const lines: string[] = [];
  for (const [entry, file] of Object.entries(ENTRY_POINTS)) {
    const source = program.getSourceFile(`${ROOT}${file}`);
    if (!source) throw new Error(`${file} is not part of the program`);
    const module = checker.getSymbolAtLocation(source);
    if (!module) throw new Error(`${file} is not a module`);
    lines.push(`# ${entry}`, '');
    for (const symbol of sorted(checker.getExportsOfModule(module))) describe(checker, symbol, '', lines);
    lines.push('');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

function sorted(symbols: readonly ts.Symbol[]): ts.Symbol[] {
  return [...symbols].sort((a, b) => a.name.localeCompare(b.name));
}

function resolved(checker: ts.TypeChecker, symbol: ts.Symbol): ts.Symbol {
  return symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
}

function describe(checker: ts.TypeChecker, exported: ts.Symbol, indent: string, lines: string[]): void {
  const symbol = resolved(checker, exported);
  const name = exported.name;
  const flags = symbol.flags;
  const declaration = symbol.declarations?.[0];
  if (flags & ts.SymbolFlags.ValueModule && declaration && ts.isSourceFile(declaration)) {
    lines.push(`${indent}namespace ${name}`);
    for (const member of sorted(checker.getExportsOfModule(symbol))) describe(checker, member, `${indent}  `, lines);
    return;
  }
  if (flags & ts.SymbolFlags.Class) {
    lines.push(`${indent}class ${name}${heritage(checker, symbol)}`);
    const constructorType = checker.getTypeOfSymbol(symbol);
    for (const signature of constructorType.getConstructSignatures()) {
      if (internal(signature.declaration)) continue;
      lines.push(`${indent}  constructor${checker.signatureToString(signature, undefined, FORMAT)}`);
    }
    for (const member of sorted(checker.getPropertiesOfType(constructorType))) {
      if (member.name === 'prototype' || hidden(member)) continue;
      lines.push(`${indent}  static ${memberLine(checker, member)}`);
    }
    members(checker, checker.getDeclaredTypeOfSymbol(symbol), `${indent}  `, lines);
  }
  if (flags & ts.SymbolFlags.Interface) {
    lines.push(`${indent}interface ${name}${heritage(checker, symbol)}`);
    members(checker, checker.getDeclaredTypeOfSymbol(symbol), `${indent}  `, lines);
  }
  if (flags & ts.SymbolFlags.TypeAlias) {
    const aliased =
      declaration && ts.isTypeAliasDeclaration(declaration) ? checker.getTypeFromTypeNode(declaration.type) : checker.getDeclaredTypeOfSymbol(symbol);
    lines.push(
      `${indent}type ${name}${typeParameters(checker, symbol)} = ${checker.typeToString(aliased, undefined, FORMAT | ts.TypeFormatFlags.InTypeAlias)}`,
    );
  }
  if (flags & ts.SymbolFlags.Enum) {
    lines.push(`${indent}enum ${name}`);
    for (const member of checker.getExportsOfModule(symbol)) {
      const value = member.valueDeclaration && ts.isEnumMember(member.valueDeclaration) ? checker.getConstantValue(member.valueDeclaration) : undefined;
      lines.push(`${indent}  ${member.name} = ${JSON.stringify(value)}`);
    }
  }
  if (flags & ts.SymbolFlags.Function) {
    for (const signature of checker.getTypeOfSymbol(symbol).getCallSignatures()) {
      lines.push(`${indent}function ${name}${checker.signatureToString(signature, undefined, FORMAT)}`);
    }
  }
  if (flags & ts.SymbolFlags.Variable && !(flags & ts.SymbolFlags.Class)) {
    lines.push(`${indent}const ${name}: ${checker.typeToString(checker.getTypeOfSymbol(symbol), undefined, FORMAT)}`);
  }
}

function heritage(checker: ts.TypeChecker, symbol: ts.Symbol): string {
  const type = checker.getDeclaredTypeOfSymbol(symbol);
  const bases = type.isClassOrInterface() ? checker.getBaseTypes(type) : [];
  return bases.length > 0 ? ` extends ${bases.map((base) => checker.typeToString(base, undefined, FORMAT)).join(', ')}` : '';
}

function typeParameters(checker: ts.TypeChecker, symbol: ts.Symbol): string {
  const parameters = checker.getDeclaredTypeOfSymbol(symbol).aliasTypeArguments ?? [];
  return parameters.length > 0 ? `<${parameters.map((parameter) => checker.typeToString(parameter)).join(', ')}>` : '';
}

/** Marked @internal: stripped from the shipped declarations, so not public. */
function internal(declaration: ts.Node | undefined): boolean {
  return declaration !== undefined && ts.getJSDocTags(declaration).some((tag) => tag.tagName.text === 'internal');
}

function hidden(member: ts.Symbol): boolean {
  if (member.name.startsWith('#') || member.name.startsWith('__')) return true;
  if (member.declarations?.some(internal)) return true;
  const modifiers = member.valueDeclaration ? ts.getCombinedModifierFlags(member.valueDeclaration) : 0;
  return (modifiers & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0;
}

function members(checker: ts.TypeChecker, type: ts.Type, indent: string, lines: string[]): void {
  for (const member of sorted(checker.getPropertiesOfType(type))) {
    if (hidden(member)) continue;
    lines.push(`${indent}${memberLine(checker, member)}`);
  }
  for (const signature of type.getCallSignatures()) lines.push(`${indent}${checker.signatureToString(signature, undefined, FORMAT)}`);
  const index = checker.getIndexInfosOfType(type);
  for (const info of index) lines.push(`${indent}[key: ${checker.typeToString(info.keyType)}]: ${checker.typeToString(info.type, undefined, FORMAT)}`);
}

function memberLine(checker: ts.TypeChecker, member: ts.Symbol): string {
  const declaration = member.valueDeclaration ?? member.declarations?.[0];
  const readonly = declaration && ts.getCombinedModifierFlags(declaration) & ts.ModifierFlags.Readonly ? 'readonly ' : '';
  const optional = member.flags & ts.SymbolFlags.Optional ? '?' : '';
  const type = checker.getTypeOfSymbol(member);
  if (member.flags & ts.SymbolFlags.Method) {
    return type
      .getCallSignatures()
      .map((signature) => `${member.name}${optional}${checker.signatureToString(signature, undefined, FORMAT)}`)
      .join('; ');
  }
  if (member.flags & ts.SymbolFlags.GetAccessor && !(member.flags & ts.SymbolFlags.SetAccessor)) {
    return `get ${member.name}: ${checker.typeToString(type, undefined, FORMAT)}`;
  }
  return `${readonly}${member.name}${optional}: ${checker.typeToString(type, undefined, FORMAT)}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const report = apiReport();
  if (process.argv.includes('--check')) {
    const committed = await readFile(REPORT_PATH, 'utf8').catch(() => '');
    if (committed !== report) {
      process.stderr.write(`the public API differs from ${REPORT_PATH}; if the change is deliberate, run npm run api:update\n`);
      process.exit(1);
    }
  } else {
    await writeFile(REPORT_PATH, report);
    process.stdout.write(`wrote ${REPORT_PATH}\n`);
  }
}
