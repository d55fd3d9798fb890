// The dashboard as a pure function of its props: the live app, `--once` and the tests all
// render this with plain data. Every line is built to the terminal's width here, rather than
// left to flexbox, so a frame never wraps and 80x24 stays readable.
import { Box, Text } from 'ink';
import type { TopViewProps } from './props.js';
import { clip, type Line } from './text.js';
import { databaseSection, fleetSection, flyRegionLine, footerSection, headerSection, sparkSection } from './summary.js';
import { hotAndRegionsSection, instancesSection } from './panels.js';

/** All the lines of one frame, each at most `columns` wide and, given `rows`, at most that many. */
function frameLines(p: TopViewProps): Line[] {
  const f = p.frame;
  const top: Line[] = [headerSection(p, f), databaseSection(p, f)];
  const footer = footerSection(p);
  if (!f) return [...top, ...(footer ? [footer] : [])].map((l) => clip(l, p.columns));
  const fly = flyRegionLine(f);
  top.push(...fleetSection(f));
  if (fly) top.push(fly);
  top.push(...sparkSection(f, p.columns));
  const fixed = top.length + (footer ? 1 : 0);
  const hotWanted = 1 + Math.max(1, f.hottest.length, f.regions.length + 1);
  const instWanted = 1 + Math.max(1, f.instances.length);
  let instRows = instWanted;
  let hotRows = hotWanted;
  if (p.rows !== undefined) {
    // The instances get the rows they need (down ones come first, see loadTopFrame), but the
    // hottest numbers keep at least their header and three rows when the fleet is large.
    const avail = Math.max(4, p.rows - fixed);
    instRows = Math.min(instWanted, Math.max(2, avail - Math.min(hotWanted, 4)));
    hotRows = Math.max(2, avail - instRows);
  }
  const lines = [...top, ...instancesSection(f, p.columns, instRows), ...hotAndRegionsSection(p, f, hotRows), ...(footer ? [footer] : [])];
  return lines.map((l) => clip(l, p.columns));
}

export function TopView(props: TopViewProps) {
  return (
    <Box flexDirection="column" width={props.columns}>
      {frameLines(props).map((line, i) => (
        <Text key={i} wrap="truncate-end">
          {line.length === 0
            ? ' '
            : line.map((s, k) => (
                <Text key={k} {...(s.color ? { color: s.color } : {})} bold={s.bold ?? false} dimColor={s.dim ?? false} inverse={s.inverse ?? false}>
                  {s.text}
                </Text>
              ))}
        </Text>
      ))}
    </Box>
  );
}
